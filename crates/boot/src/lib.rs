//! Guest boot assets, kept under the data dir's `system/`:
//! - the guest kernel and its modules, taken from the distribution's cloud kernel package
//!   (`apt-get download linux-image-cloud-<arch>` + `dpkg-deb -x`, no root needed), or from
//!   `HYPEDECK_KERNEL_DEB` (a .deb path) for hosts without apt;
//! - the initramfs: `hypedeck-guest-init` as `/init` plus the virtio modules in dependency
//!   order (`/lib/modules/order`), built in-process as a gzip'd newc cpio.
//!
//! Both are cached: the kernel by version, the initramfs by the hash of its inputs, so a new
//! guest-init build makes a new initramfs and running VMs keep theirs.

pub mod bundle;
pub mod cpio;

pub use bundle::{Bundle, Manifest, build_bundle, find_bundle};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Modules the guest needs (dependencies are added automatically).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "virtio_net",
    "vmw_vsock_virtio_transport",
    "overlay",
    "button",
    "evdev",
    // Memory back to the host: ballooning and free page reporting.
    "virtio_balloon",
];

/// A cached kernel's list of the modules it was unpacked with: a cache made for another list
/// is unpacked again.
const MODULES_LIST: &str = "guest-modules";

fn unpacked(dir: &Path) -> bool {
    dir.join("vmlinuz").is_file()
        && std::fs::read_to_string(dir.join(MODULES_LIST))
            .is_ok_and(|list| list == GUEST_MODULES.join("\n"))
}

/// Errors preparing boot assets.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A tool failed.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// The command.
        tool: String,
        /// Its complaint.
        detail: String,
    },
    /// A tool is missing.
    #[error("{0} is not installed")]
    Missing(String),
    /// File I/O failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel package lacks something.
    #[error("kernel package: {0}")]
    Kernel(String),
    /// The guest init binary was not found.
    #[error(
        "hypedeck-guest-init was not found (build it with `make guest-init`, or set HYPEDECK_GUEST_INIT)"
    )]
    NoGuestInit,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BootError {
    let what = what.into();
    move |source| BootError::Io { what, source }
}

/// Ready-to-boot assets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootAssets {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Kernel release (e.g. `6.1.0-56-cloud-amd64`).
    pub kernel_version: String,
}

fn debian_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

async fn run(tool: &str, args: &[&str], cwd: &Path) -> Result<String, BootError> {
    let out = tokio::process::Command::new(tool)
        .args(args)
        .current_dir(cwd)
        .output()
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                BootError::Missing(tool.to_string())
            } else {
                BootError::Io {
                    what: format!("run {tool}"),
                    source: e,
                }
            }
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        return Err(BootError::Tool {
            tool: format!("{tool} {}", args.join(" ")),
            detail: last,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Finds the guest init binary: `HYPEDECK_GUEST_INIT`, next to the running executable, in
/// `../lib/hypedeck/` from it (installed packages), or in the cargo target dir's musl build.
pub fn find_guest_init() -> Result<PathBuf, BootError> {
    if let Some(p) = std::env::var_os("HYPEDECK_GUEST_INIT") {
        let p = PathBuf::from(p);
        return if is_static_elf(&p) {
            Ok(p)
        } else {
            Err(BootError::NoGuestInit)
        };
    }
    let exe = std::env::current_exe().map_err(io("locate the running executable"))?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join("hypedeck-guest-init"));
        // Installed by the .deb / AppImage: /usr/bin/hypedeck → /usr/lib/hypedeck/.
        candidates.push(dir.join("../lib/hypedeck/hypedeck-guest-init"));
        for up in [dir.parent(), dir.parent().and_then(Path::parent)]
            .into_iter()
            .flatten()
        {
            let triple = if cfg!(target_arch = "aarch64") {
                "aarch64-unknown-linux-musl"
            } else {
                "x86_64-unknown-linux-musl"
            };
            candidates.push(up.join(triple).join("release").join("hypedeck-guest-init"));
        }
    }
    candidates
        .into_iter()
        // A host (dynamically linked) build may sit next to the executable; only a static
        // one can run as /init.
        .find(|p| is_static_elf(p))
        .ok_or(BootError::NoGuestInit)
}

/// Whether `path` is an ELF64 executable without a program interpreter (statically linked).
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        // PT_INTERP = 3.
        bytes
            .get(at..at + 4)
            .and_then(|t| t.try_into().ok())
            .map(u32::from_le_bytes)
            != Some(3)
    })
}

/// The kernel .deb the app's settings name (see [`set_kernel_deb`]).
static SETTINGS_KERNEL_DEB: std::sync::RwLock<Option<PathBuf>> = std::sync::RwLock::new(None);

/// Sets the kernel .deb from the app's settings; `HYPEDECK_KERNEL_DEB` still wins. Call before
/// the first boot (boot assets are prepared once per process).
pub fn set_kernel_deb(path: Option<PathBuf>) {
    *SETTINGS_KERNEL_DEB
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = path;
}

/// The kernel .deb guests boot from instead of apt's: `HYPEDECK_KERNEL_DEB`, else the
/// settings' one, else `None` (apt).
pub fn kernel_deb() -> Option<PathBuf> {
    std::env::var_os("HYPEDECK_KERNEL_DEB")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            SETTINGS_KERNEL_DEB
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
}

/// The versioned kernel package apt would install for `linux-image-cloud-<arch>`.
async fn apt_kernel_package(cwd: &Path) -> Result<String, BootError> {
    let meta = format!("linux-image-cloud-{}", debian_arch());
    let depends = run("apt-cache", &["depends", &meta], cwd).await?;
    depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| {
            p.starts_with("linux-image-") && p.as_bytes().get(12).is_some_and(u8::is_ascii_digit)
        })
        .map(str::to_string)
        .ok_or_else(|| {
            BootError::Kernel(format!(
                "apt-cache knows no kernel for {meta}; run apt-get update"
            ))
        })
}

/// Where the guest kernel will come from, as found without downloading anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// The kernel that ships with the app, checked against its manifest.
    Bundled {
        /// Its directory.
        dir: PathBuf,
        /// Its manifest.
        manifest: Box<Manifest>,
    },
    /// apt's kernel, already unpacked under `system/kernel/<version>/`.
    Cached {
        /// Kernel release.
        version: String,
    },
    /// apt's kernel package, downloaded (no root needed) on the first start.
    Apt {
        /// The package, e.g. `linux-image-6.1.0-44-cloud-amd64`.
        package: String,
    },
    /// A kernel .deb given with `HYPEDECK_KERNEL_DEB`, unpacked on the first start.
    Deb {
        /// The file.
        path: PathBuf,
        /// Its package name.
        package: String,
    },
}

/// Checks, without downloading, that [`ensure_kernel`] can get a kernel: `deb` (the value of
/// `HYPEDECK_KERNEL_DEB`) must be a linux-image package; otherwise apt must know the cloud
/// kernel. The error says what is missing.
pub async fn probe_kernel(system: &Path, deb: Option<&Path>) -> Result<KernelSource, BootError> {
    if let Some(dir) = find_bundle() {
        let bundle = Bundle::load(&dir)?;
        return Ok(KernelSource::Bundled {
            dir: bundle.dir,
            manifest: Box::new(bundle.manifest),
        });
    }
    let cwd = std::env::temp_dir();
    if let Some(deb) = deb {
        if !deb.is_file() {
            return Err(BootError::Kernel(format!(
                "HYPEDECK_KERNEL_DEB points at {}, which does not exist",
                deb.display()
            )));
        }
        let text = deb.display().to_string();
        let package = run("dpkg-deb", &["--field", &text, "Package"], &cwd)
            .await
            .map_err(|e| match e {
                BootError::Tool { detail, .. } => {
                    BootError::Kernel(format!("{text} is not a Debian package ({detail})"))
                }
                other => other,
            })?
            .trim()
            .to_string();
        if !package.starts_with("linux-image-") {
            return Err(BootError::Kernel(format!(
                "{text} holds the package {package:?}, not a linux-image kernel"
            )));
        }
        return Ok(KernelSource::Deb {
            path: deb.to_path_buf(),
            package,
        });
    }
    let package = apt_kernel_package(&cwd).await?;
    let version = package.trim_start_matches("linux-image-").to_string();
    if system
        .join("kernel")
        .join(&version)
        .join("vmlinuz")
        .is_file()
    {
        Ok(KernelSource::Cached { version })
    } else {
        Ok(KernelSource::Apt { package })
    }
}

/// Makes sure the kernel is unpacked under `system/kernel/<version>/` and returns its dir and
/// release. The kernel comes from the app's bundle ([`find_bundle`]) when it has one, else from
/// the .deb of the settings or `HYPEDECK_KERNEL_DEB` ([`kernel_deb`]), else from apt.
pub async fn ensure_kernel(system: &Path) -> Result<(PathBuf, String), BootError> {
    let kernels = system.join("kernel");
    std::fs::create_dir_all(&kernels).map_err(io("create the kernel dir"))?;
    if let Some(dir) = find_bundle() {
        let bundle = Bundle::load(&dir)?;
        return bundle.install(&kernels);
    }
    let work = tempdir_in(&kernels)?;
    let result = ensure_kernel_from_package(&kernels, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn ensure_kernel_from_package(
    kernels: &Path,
    work: &Path,
) -> Result<(PathBuf, String), BootError> {
    let deb = match kernel_deb() {
        Some(p) => p,
        None => {
            let package = apt_kernel_package(work).await?;
            let version = package.trim_start_matches("linux-image-").to_string();
            if unpacked(&kernels.join(&version)) {
                return Ok((kernels.join(&version), version));
            }
            run("apt-get", &["download", "-qq", &package], work).await?;
            std::fs::read_dir(work)
                .map_err(io("list the download"))?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
                .ok_or_else(|| BootError::Kernel("apt-get download produced no .deb".into()))?
        }
    };
    let package = unpack_deb(&deb, work).await?;
    let target = kernels.join(&package.release);
    if !unpacked(&target) {
        let staging = work.join("out");
        stage_kernel(&package, &staging)?;
        let _ = std::fs::remove_dir_all(&target);
        std::fs::rename(&staging, &target).map_err(io("install the kernel"))?;
    }
    Ok((target, package.release))
}

/// A kernel package unpacked into a work dir.
struct Unpacked {
    /// Where `dpkg-deb -x` put it.
    root: PathBuf,
    /// Its `/boot/vmlinuz-<release>`.
    vmlinuz: PathBuf,
    /// The kernel release (`uname -r`).
    release: String,
}

/// Unpacks a kernel .deb under `work/x` (`dpkg-deb -x`, no root).
async fn unpack_deb(deb: &Path, work: &Path) -> Result<Unpacked, BootError> {
    let root = work.join("x");
    let deb_text = deb.display().to_string();
    let root_text = root.display().to_string();
    run("dpkg-deb", &["-x", &deb_text, &root_text], work).await?;
    let vmlinuz = std::fs::read_dir(root.join("boot"))
        .map_err(io("read the kernel package"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| BootError::Kernel("no /boot/vmlinuz-* in the package".into()))?;
    let release = vmlinuz
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_start_matches("vmlinuz-")
                .to_string()
        })
        .unwrap_or_default();
    Ok(Unpacked {
        root,
        vmlinuz,
        release,
    })
}

/// Writes the boot layout of an unpacked kernel to `out`: `vmlinuz` (an arm64 kernel
/// decompressed to the raw `Image` Virtualization.framework needs), `modules/<name>.ko` (the
/// guest's modules and their dependencies) and the module list.
fn stage_kernel(package: &Unpacked, out: &Path) -> Result<(), BootError> {
    std::fs::create_dir_all(out.join("modules")).map_err(io("stage the kernel"))?;
    let image = std::fs::read(&package.vmlinuz).map_err(io("read the kernel"))?;
    let image = if image.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&image[..]), &mut raw)
            .map_err(io("decompress the kernel"))?;
        raw
    } else {
        image
    };
    std::fs::write(out.join("vmlinuz"), image).map_err(io("copy the kernel"))?;
    let modules_root = package
        .root
        .join("lib/modules")
        .join(&package.release)
        .join("kernel");
    let mut all = BTreeMap::new();
    collect_modules(&modules_root, &mut all)?;
    for name in module_order(&all, GUEST_MODULES)? {
        std::fs::copy(&all[&name], out.join("modules").join(format!("{name}.ko")))
            .map_err(io("copy a module"))?;
    }
    std::fs::write(out.join(MODULES_LIST), GUEST_MODULES.join("\n")).map_err(io("list the modules"))
}

fn tempdir_in(dir: &Path) -> Result<PathBuf, BootError> {
    let path = dir.join(format!(".work-{}-{}", std::process::id(), nanos()));
    std::fs::create_dir_all(&path).map_err(io("create a work dir"))?;
    Ok(path)
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn collect_modules(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<(), BootError> {
    for entry in std::fs::read_dir(dir)
        .map_err(io("read kernel modules"))?
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            collect_modules(&path, out)?;
        } else if let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
        {
            out.insert(name.replace('-', "_"), path);
        }
    }
    Ok(())
}

/// `depends=` of a module, from its `.modinfo` strings.
pub fn module_depends(bytes: &[u8]) -> Vec<String> {
    let needle = b"depends=";
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|start| {
            let rest = &bytes[start + needle.len()..];
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

/// The wanted modules plus their dependencies, dependencies first. Modules built into the
/// kernel (absent from the package) are skipped.
fn module_order(
    all: &BTreeMap<String, PathBuf>,
    wanted: &[&str],
) -> Result<Vec<String>, BootError> {
    fn visit(
        name: &str,
        all: &BTreeMap<String, PathBuf>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), BootError> {
        if done.contains(name) {
            return Ok(());
        }
        done.insert(name.to_string());
        let Some(path) = all.get(name) else {
            return Ok(());
        };
        let bytes = std::fs::read(path).map_err(io("read a module"))?;
        for dep in module_depends(&bytes) {
            visit(&dep, all, done, order)?;
        }
        order.push(name.to_string());
        Ok(())
    }
    let mut done = BTreeSet::new();
    let mut order = Vec::new();
    for name in wanted {
        visit(name, all, &mut done, &mut order)?;
    }
    Ok(order)
}

/// Assets found by the last [`ensure`], by system dir: finding them asks apt which kernel is
/// current and hashes the guest init (~0.8 s), which no boot after the first should pay.
static FOUND: std::sync::Mutex<Option<(PathBuf, BootAssets)>> = std::sync::Mutex::new(None);

/// Kernel + initramfs, building whatever is missing. Found once per process and system dir,
/// then reused while both files are there.
pub async fn ensure(system: &Path) -> Result<BootAssets, BootError> {
    let found = FOUND
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .filter(|(dir, a)| dir == system && a.kernel.is_file() && a.initrd.is_file());
    if let Some((_, assets)) = found {
        return Ok(assets);
    }
    let assets = find_or_build(system).await?;
    *FOUND.lock().unwrap_or_else(|p| p.into_inner()) = Some((system.to_path_buf(), assets.clone()));
    Ok(assets)
}

async fn find_or_build(system: &Path) -> Result<BootAssets, BootError> {
    let (kernel_dir, version) = ensure_kernel(system).await?;
    let init = std::fs::read(find_guest_init()?).map_err(io("read hypedeck-guest-init"))?;
    let modules_dir = kernel_dir.join("modules");
    let order = order_from_dir(&modules_dir)?;
    let mut hash = Sha256::new();
    hash.update(&init);
    // The kernel's dir, not only its release: two builds of one release sit in two dirs.
    hash.update(
        kernel_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(version.clone())
            .as_bytes(),
    );
    hash.update(order.join("\n").as_bytes());
    let key = hex::encode(&hash.finalize()[..8]);
    let initrd = system.join("initrd").join(&key).join("initrd.img");
    if !initrd.is_file() {
        let mut entries = vec![
            cpio::Entry::Dir("dev".into(), 0o755),
            cpio::Entry::Dir("proc".into(), 0o755),
            cpio::Entry::Dir("sys".into(), 0o755),
            cpio::Entry::Dir("lib".into(), 0o755),
            cpio::Entry::Dir("lib/modules".into(), 0o755),
            cpio::Entry::File("init".into(), 0o755, init),
        ];
        for name in &order {
            let data = std::fs::read(modules_dir.join(format!("{name}.ko")))
                .map_err(io("read a module"))?;
            entries.push(cpio::Entry::File(
                format!("lib/modules/{name}.ko"),
                0o644,
                data,
            ));
        }
        let mut order_file = order.join("\n");
        order_file.push('\n');
        entries.push(cpio::Entry::File(
            "lib/modules/order".into(),
            0o644,
            order_file.into_bytes(),
        ));
        let bytes = cpio::archive_gz(&entries).map_err(io("compress the initramfs"))?;
        let dir = initrd.parent().map(Path::to_path_buf).unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(io("create the initramfs dir"))?;
        let tmp = dir.join(format!(".initrd.img.{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(io("write the initramfs"))?;
        std::fs::rename(&tmp, &initrd).map_err(io("install the initramfs"))?;
    }
    Ok(BootAssets {
        kernel: kernel_dir.join("vmlinuz"),
        initrd,
        kernel_version: version,
    })
}

/// Removes cached kernels (`system/kernel/<dir>/`) and initramfs (`system/initrd/<key>/`)
/// whose dirs are not in `keep`; work dirs (named `.…`) are left alone. Returns what it removed.
pub fn prune(system: &Path, keep: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for sub in ["kernel", "initrd"] {
        let Ok(entries) = std::fs::read_dir(system.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let work = entry.file_name().to_string_lossy().starts_with('.');
            if work || !path.is_dir() || keep.contains(&path) {
                continue;
            }
            if std::fs::remove_dir_all(&path).is_ok() {
                removed.push(path);
            }
        }
    }
    removed
}

/// Module load order for the modules present in `dir`.
fn order_from_dir(dir: &Path) -> Result<Vec<String>, BootError> {
    let mut all = BTreeMap::new();
    collect_modules(dir, &mut all)?;
    module_order(&all, GUEST_MODULES)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal .deb of package `name` (dpkg-deb --build), in `dir`.
    fn tiny_deb(dir: &Path, name: &str) -> PathBuf {
        let root = dir.join(format!("{name}-root"));
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            format!("Package: {name}\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"),
        )
        .unwrap();
        let deb = dir.join(format!("{name}.deb"));
        let ok = std::process::Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&root)
            .arg(&deb)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "dpkg-deb --build");
        deb
    }

    #[test]
    fn prune_keeps_what_is_in_use_and_work_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let system = dir.path();
        for d in [
            "kernel/6.1-old",
            "kernel/6.1-new",
            "kernel/.work-1-2",
            "initrd/aaaa",
            "initrd/bbbb",
        ] {
            std::fs::create_dir_all(system.join(d)).unwrap();
        }
        let keep: BTreeSet<PathBuf> = [system.join("kernel/6.1-new"), system.join("initrd/bbbb")]
            .into_iter()
            .collect();
        let mut removed = prune(system, &keep);
        removed.sort();
        assert_eq!(
            removed,
            [system.join("initrd/aaaa"), system.join("kernel/6.1-old")]
        );
        assert!(system.join("kernel/.work-1-2").is_dir());
        assert!(system.join("kernel/6.1-new").is_dir());
        assert!(prune(&system.join("nothing-here"), &keep).is_empty());
    }

    #[tokio::test]
    async fn probe_kernel_checks_a_given_deb_without_unpacking_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.deb");
        let err = probe_kernel(dir.path(), Some(&missing)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "kernel package: HYPEDECK_KERNEL_DEB points at {}, which does not exist",
                missing.display()
            )
        );
        let junk = dir.path().join("junk.deb");
        std::fs::write(&junk, b"not an archive").unwrap();
        let err = probe_kernel(dir.path(), Some(&junk))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a Debian package"), "{err}");
        let other = tiny_deb(dir.path(), "hello");
        let err = probe_kernel(dir.path(), Some(&other))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("holds the package \"hello\", not a linux-image kernel"),
            "{err}"
        );
        let kernel = tiny_deb(dir.path(), "linux-image-9.9.9-test");
        assert_eq!(
            probe_kernel(dir.path(), Some(&kernel)).await.unwrap(),
            KernelSource::Deb {
                path: kernel.clone(),
                package: "linux-image-9.9.9-test".into()
            }
        );
        // Nothing was unpacked.
        assert!(!dir.path().join("kernel").exists());
    }

    #[test]
    fn static_elf_detection() {
        let me = std::env::current_exe().unwrap();
        if cfg!(target_env = "gnu") {
            assert!(!is_static_elf(&me), "the test binary is dynamically linked");
        }
        assert!(!is_static_elf(Path::new("/nonexistent")));
        let dir = tempfile::tempdir().unwrap();
        let not_elf = dir.path().join("x");
        std::fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
        assert!(!is_static_elf(&not_elf));
        if Path::new("/bin/busybox").exists() {
            assert!(
                is_static_elf(Path::new("/bin/busybox")),
                "busybox-static is static"
            );
        }
    }

    #[test]
    fn depends_are_read_from_modinfo() {
        let bytes = b"\x00license=GPL\x00depends=virtio_ring,virtio\x00name=virtio_blk\x00";
        assert_eq!(module_depends(bytes), vec!["virtio_ring", "virtio"]);
        assert!(module_depends(b"\x00depends=\x00").is_empty());
    }

    #[test]
    fn order_puts_dependencies_first() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, deps: &str| {
            let p = dir.path().join(format!("{name}.ko"));
            std::fs::write(&p, format!("\0depends={deps}\0")).unwrap();
            (name.to_string(), p)
        };
        let all: BTreeMap<String, PathBuf> = [
            write("virtio_ring", ""),
            write("virtio", "virtio_ring"),
            write("virtio_pci", "virtio_ring,virtio"),
            write("virtio_blk", "virtio,virtio_ring"),
        ]
        .into_iter()
        .collect();
        let order = module_order(&all, &["virtio_pci", "virtio_blk", "builtin_one"]).unwrap();
        assert_eq!(
            order,
            vec!["virtio_ring", "virtio", "virtio_pci", "virtio_blk"]
        );
    }
}
