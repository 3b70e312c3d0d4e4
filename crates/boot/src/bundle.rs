//! The guest kernel that ships with the app: the distribution's cloud kernel, unpacked at build
//! time into the boot layout (`vmlinuz`, `modules/<name>.ko`, the module list) with its license
//! and a manifest (`kernel.json`) that pins it: the package, its version, the .deb's checksum,
//! where its source is, and a checksum of every file. The .deb and the AppImage carry it in
//! `/usr/lib/hypedeck/kernel/`, the macOS bundle in `Contents/Resources/kernel/`.
//!
//! The engine prefers it to every other source, so the same app version boots the same guest
//! everywhere, offline, on any distribution. It is checked against its manifest and copied into
//! the data dir's `system/kernel/` (the AppImage's files go away when it exits; a VM restored
//! later still needs its kernel there).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{BootError, GUEST_MODULES, MODULES_LIST, io, run, stage_kernel, unpack_deb};

/// The manifest's file name.
pub const MANIFEST: &str = "kernel.json";
/// The license file the distribution ships with the kernel, copied beside it.
pub const COPYRIGHT: &str = "copyright";

/// What `kernel.json` says about a bundled kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The kernel release (`uname -r`), e.g. `6.1.0-57-cloud-amd64`.
    pub release: String,
    /// The binary package, e.g. `linux-image-6.1.0-57-cloud-amd64`.
    pub package: String,
    /// Its version, e.g. `6.1.192-3`.
    pub version: String,
    /// Debian architecture (`amd64`, `arm64`).
    pub arch: String,
    /// SHA-256 of the .deb it was unpacked from.
    pub deb_sha256: String,
    /// The source package as the .deb names it (e.g. `linux-signed-amd64 (6.1.192+3)`).
    pub source: String,
    /// Where the kernel's source is (the distribution's archive of the `linux` source package).
    pub source_url: String,
    /// The kernel's license.
    pub license: String,
    /// SHA-256 of every file of the bundle but the manifest, by path relative to it.
    pub files: BTreeMap<String, String>,
}

/// Where the app's bundled kernel is, if it has one: `HYPEDECK_KERNEL_BUNDLE` (a directory;
/// `off` turns the bundle off, for the .deb and apt paths), else beside the running
/// executable: `../lib/hypedeck/kernel` (the .deb and the AppImage), `../Resources/kernel`
/// (the macOS bundle), or `../guest-kernel/<arch>` (a cargo target dir, after
/// `make kernel-bundle`).
pub fn find_bundle() -> Option<PathBuf> {
    match std::env::var_os("HYPEDECK_KERNEL_BUNDLE") {
        Some(v) if v == "off" => return None,
        Some(v) if !v.is_empty() => return Some(PathBuf::from(v)),
        _ => {}
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [
        dir.join("../lib/hypedeck/kernel"),
        dir.join("../Resources/kernel"),
        dir.join("../guest-kernel").join(crate::debian_arch()),
    ]
    .into_iter()
    .find(|d| d.join(MANIFEST).is_file())
}

fn sha256_file(path: &Path) -> Result<String, BootError> {
    let bytes = std::fs::read(path).map_err(io(format!("read {}", path.display())))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Every file under `dir` but the manifest, by relative path (`/`-separated).
fn files(dir: &Path) -> Result<Vec<String>, BootError> {
    fn walk(root: &Path, at: &Path, out: &mut Vec<String>) -> Result<(), BootError> {
        for entry in std::fs::read_dir(at)
            .map_err(io(format!("read {}", at.display())))?
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else if let Ok(relative) = path.strip_prefix(root) {
                let name = relative.to_string_lossy().replace('\\', "/");
                if name != MANIFEST {
                    out.push(name);
                }
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// A bundled kernel, checked against its manifest.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Bundle {
    /// Reads the manifest in `dir` and checks the bundle: every file it lists has its checksum
    /// and there is no other, it is for this machine's architecture, and it carries the modules
    /// this build's guests load. The error says what is wrong and how to get past it.
    pub fn load(dir: &Path) -> Result<Bundle, BootError> {
        // Checked once per process while its files stay as they were (the Setup checks ask
        // again and again; hashing the kernel each time would cost a debug build ~0.3 s).
        static CHECKED: std::sync::Mutex<Option<(PathBuf, Vec<std::time::SystemTime>, Manifest)>> =
            std::sync::Mutex::new(None);
        let stamps: Vec<_> = [MANIFEST, "vmlinuz"]
            .iter()
            .filter_map(|f| {
                std::fs::metadata(dir.join(f))
                    .and_then(|m| m.modified())
                    .ok()
            })
            .collect();
        let mut checked = CHECKED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((d, s, manifest)) = checked.as_ref()
            && d == dir
            && *s == stamps
        {
            return Ok(Bundle {
                dir: dir.to_path_buf(),
                manifest: manifest.clone(),
            });
        }
        let bundle = Bundle::verify(dir)?;
        *checked = Some((dir.to_path_buf(), stamps, bundle.manifest.clone()));
        Ok(bundle)
    }

    fn verify(dir: &Path) -> Result<Bundle, BootError> {
        let damaged = |why: String| {
            BootError::Kernel(format!(
                "the bundled kernel in {} {why}; reinstall Hypedeck (or set HYPEDECK_KERNEL_BUNDLE=off to use the kernel .deb setting or apt)",
                dir.display()
            ))
        };
        let text = std::fs::read_to_string(dir.join(MANIFEST))
            .map_err(|e| damaged(format!("has no readable {MANIFEST} ({e})")))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| damaged(format!("has a bad {MANIFEST} ({e})")))?;
        if manifest.arch != crate::debian_arch() {
            return Err(damaged(format!(
                "is for {}, not {}",
                manifest.arch,
                crate::debian_arch()
            )));
        }
        let present = files(dir)?;
        let listed: Vec<&String> = manifest.files.keys().collect();
        if present.iter().collect::<Vec<_>>() != listed {
            return Err(damaged(format!(
                "holds other files than its manifest lists ({} present, {} listed)",
                present.len(),
                listed.len()
            )));
        }
        for (name, want) in &manifest.files {
            if &sha256_file(&dir.join(name))? != want {
                return Err(damaged(format!(
                    "has a {name} that does not match its checksum"
                )));
            }
        }
        let list = std::fs::read_to_string(dir.join(MODULES_LIST)).unwrap_or_default();
        if list != GUEST_MODULES.join("\n") {
            return Err(damaged(
                "was made for another list of guest modules (a stale build: run `make kernel-bundle`)"
                    .into(),
            ));
        }
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// Copies the bundle's boot files into `kernels/<release>/` (or `<release>+<checksum>` when a
    /// different kernel of the same release is there) unless they are there already; returns
    /// that dir and the release.
    pub fn install(&self, kernels: &Path) -> Result<(PathBuf, String), BootError> {
        let release = &self.manifest.release;
        let vmlinuz = self
            .manifest
            .files
            .get("vmlinuz")
            .cloned()
            .unwrap_or_default();
        // The release's dir, unless another kernel of that release is there: each candidate's
        // kernel is hashed once.
        let mut target = kernels.join(release);
        let mut same = self.same_kernel(&target, &vmlinuz);
        if !same && target.exists() {
            target = kernels.join(format!("{release}+{}", &vmlinuz[..vmlinuz.len().min(12)]));
            same = self.same_kernel(&target, &vmlinuz);
        }
        if same && crate::unpacked(&target) {
            return Ok((target, release.clone()));
        }
        let staging = kernels.join(format!(".bundle-{}-{}", std::process::id(), crate::nanos()));
        std::fs::create_dir_all(staging.join("modules")).map_err(io("stage the kernel"))?;
        let copied = (|| {
            for name in self.manifest.files.keys() {
                if name == "vmlinuz" || name == MODULES_LIST || name.starts_with("modules/") {
                    std::fs::copy(self.dir.join(name), staging.join(name))
                        .map_err(io(format!("copy the bundled {name}")))?;
                }
            }
            let _ = std::fs::remove_dir_all(&target);
            std::fs::rename(&staging, &target).map_err(io("install the bundled kernel"))
        })();
        if copied.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        copied?;
        Ok((target, release.clone()))
    }

    fn same_kernel(&self, dir: &Path, vmlinuz_sha: &str) -> bool {
        sha256_file(&dir.join("vmlinuz")).is_ok_and(|s| s == vmlinuz_sha)
    }
}

/// Builds a bundle in `out` (made or emptied) from a kernel .deb: its boot layout, the
/// distribution's copyright file, and the manifest. At build time, with `dpkg-deb`. `pin`,
/// when given, is the `package=version` the .deb must be (and the build fails otherwise).
pub async fn build_bundle(
    deb: &Path,
    out: &Path,
    pin: Option<&str>,
) -> Result<Manifest, BootError> {
    // The tools run in the work dir: relative paths are the caller's.
    let deb = &std::path::absolute(deb).map_err(io("resolve the .deb's path"))?;
    let out = &std::path::absolute(out).map_err(io("resolve the bundle's path"))?;
    let work = out.with_extension("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io("create a work dir"))?;
    let result = build_in(deb, out, pin, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn build_in(
    deb: &Path,
    out: &Path,
    pin: Option<&str>,
    work: &Path,
) -> Result<Manifest, BootError> {
    let deb_text = deb.display().to_string();
    let fields = run(
        "dpkg-deb",
        &[
            "--field",
            &deb_text,
            "Package",
            "Version",
            "Architecture",
            "Source",
        ],
        work,
    )
    .await?;
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let (package, version, arch) = (field("Package"), field("Version"), field("Architecture"));
    if !package.starts_with("linux-image-") {
        return Err(BootError::Kernel(format!(
            "{deb_text} holds {package:?}, not a linux-image kernel"
        )));
    }
    if let Some(pin) = pin
        && pin != format!("{package}={version}")
    {
        return Err(BootError::Kernel(format!(
            "{deb_text} is {package}={version}, not the pinned {pin}"
        )));
    }
    let unpacked = unpack_deb(deb, work).await?;
    let _ = std::fs::remove_dir_all(out);
    stage_kernel(&unpacked, out)?;
    let copyright = unpacked
        .root
        .join("usr/share/doc")
        .join(&package)
        .join("copyright");
    std::fs::copy(&copyright, out.join(COPYRIGHT)).map_err(io(format!(
        "copy the kernel's license ({})",
        copyright.display()
    )))?;
    let mut files_sha = BTreeMap::new();
    for name in files(out)? {
        files_sha.insert(name.clone(), sha256_file(&out.join(&name))?);
    }
    let manifest = Manifest {
        release: unpacked.release,
        package,
        source: {
            let source = field("Source");
            if source.is_empty() {
                "linux".into()
            } else {
                source
            }
        },
        // Debian's kernels are built from the `linux` source package of the same version.
        source_url: format!("https://snapshot.debian.org/package/linux/{version}/"),
        version,
        arch,
        deb_sha256: sha256_file(deb)?,
        license: "GPL-2.0-only (see copyright)".into(),
        files: files_sha,
    };
    let json =
        serde_json::to_string_pretty(&manifest).map_err(|e| BootError::Kernel(e.to_string()))?;
    std::fs::write(out.join(MANIFEST), json + "\n").map_err(io("write the manifest"))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle-shaped dir with a manifest over its files (no real kernel).
    fn fake_bundle(dir: &Path) -> Manifest {
        std::fs::create_dir_all(dir.join("modules")).unwrap();
        std::fs::write(dir.join("vmlinuz"), b"kernel bytes").unwrap();
        std::fs::write(dir.join("modules/virtio_blk.ko"), b"module").unwrap();
        std::fs::write(dir.join(MODULES_LIST), GUEST_MODULES.join("\n")).unwrap();
        std::fs::write(dir.join(COPYRIGHT), b"GPL").unwrap();
        let mut files_sha = BTreeMap::new();
        for name in files(dir).unwrap() {
            files_sha.insert(name.clone(), sha256_file(&dir.join(&name)).unwrap());
        }
        let manifest = Manifest {
            release: "9.9.9-test".into(),
            package: "linux-image-9.9.9-test".into(),
            version: "9.9.9-1".into(),
            arch: crate::debian_arch().into(),
            deb_sha256: "00".into(),
            source: "linux".into(),
            source_url: "https://snapshot.debian.org/package/linux/9.9.9-1/".into(),
            license: "GPL-2.0-only".into(),
            files: files_sha,
        };
        std::fs::write(
            dir.join(MANIFEST),
            serde_json::to_string(&manifest).unwrap(),
        )
        .unwrap();
        manifest
    }

    #[test]
    fn a_bundle_is_checked_then_installed_once_and_beside_a_different_build() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bundle");
        let manifest = fake_bundle(&dir);
        let kernels = tmp.path().join("system/kernel");
        std::fs::create_dir_all(&kernels).unwrap();
        let bundle = Bundle::load(&dir).unwrap();
        assert_eq!(bundle.manifest, manifest);
        let (installed, release) = bundle.install(&kernels).unwrap();
        assert_eq!(release, "9.9.9-test");
        assert_eq!(installed, kernels.join("9.9.9-test"));
        assert_eq!(
            std::fs::read(installed.join("vmlinuz")).unwrap(),
            b"kernel bytes"
        );
        assert!(installed.join("modules/virtio_blk.ko").is_file());
        assert!(!installed.join(COPYRIGHT).exists());
        // Installed again: the same dir, untouched.
        let stamp = std::fs::metadata(installed.join("vmlinuz"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(bundle.install(&kernels).unwrap().0, installed);
        assert_eq!(
            std::fs::metadata(installed.join("vmlinuz"))
                .unwrap()
                .modified()
                .unwrap(),
            stamp
        );
        // Another build of the same release goes beside it, not over it.
        std::fs::write(dir.join("vmlinuz"), b"other kernel").unwrap();
        let mut other = manifest.clone();
        other
            .files
            .insert("vmlinuz".into(), sha256_file(&dir.join("vmlinuz")).unwrap());
        std::fs::write(dir.join(MANIFEST), serde_json::to_string(&other).unwrap()).unwrap();
        let beside = Bundle::load(&dir).unwrap().install(&kernels).unwrap().0;
        assert_ne!(beside, installed);
        assert_eq!(
            std::fs::read(installed.join("vmlinuz")).unwrap(),
            b"kernel bytes"
        );
        assert_eq!(
            std::fs::read(beside.join("vmlinuz")).unwrap(),
            b"other kernel"
        );
    }

    #[test]
    fn a_damaged_or_foreign_bundle_is_refused_with_the_way_out() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bundle");
        let manifest = fake_bundle(&dir);
        std::fs::write(dir.join("vmlinuz"), b"tampered").unwrap();
        let err = Bundle::load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("has a vmlinuz that does not match its checksum"),
            "{err}"
        );
        assert!(err.contains("HYPEDECK_KERNEL_BUNDLE=off"), "{err}");
        fake_bundle(&dir);
        std::fs::write(dir.join("extra"), b"x").unwrap();
        let err = Bundle::load(&dir).unwrap_err().to_string();
        assert!(err.contains("other files than its manifest lists"), "{err}");
        std::fs::remove_file(dir.join("extra")).unwrap();
        let mut foreign = manifest;
        foreign.arch = "s390x".into();
        std::fs::write(dir.join(MANIFEST), serde_json::to_string(&foreign).unwrap()).unwrap();
        let err = Bundle::load(&dir).unwrap_err().to_string();
        assert!(err.contains("is for s390x"), "{err}");
    }
}
