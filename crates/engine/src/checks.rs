//! First-run checks: what running a sandbox needs from this machine (a hypervisor, KVM, the
//! guest kernel, the guest init binary, the OS keychain), each with what was found, why it is
//! needed and the exact command that fixes it. Nothing here downloads, installs or changes
//! anything; the UI shows the list and re-runs it after the user fixed something.
//!
//! Invariants: `missing` means a sandbox cannot start until it is fixed; `warning` means it can,
//! worse (no KVM: emulation); texts name paths and packages, never secret values.

use std::path::Path;

use hypedeck_model::HypervisorKind;
use serde::Serialize;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Present and usable.
    Ok,
    /// Usable, with a cost the user should know about.
    Warning,
    /// Sandboxes cannot start until this is fixed.
    Missing,
}

/// One check, as the API and the UI show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id: `hypervisor`, `kvm`, `kernel`, `guest_init`, `keychain`.
    pub id: &'static str,
    /// What is checked, for a heading.
    pub title: &'static str,
    /// The outcome.
    pub status: CheckStatus,
    /// What was found (or what is wrong), one sentence.
    pub detail: String,
    /// Why Hypedeck needs it.
    pub why: &'static str,
    /// The command (or action) that fixes it, when not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(id: &'static str, title: &'static str, why: &'static str) -> Check {
        Check {
            id,
            title,
            status: CheckStatus::Ok,
            detail: String::new(),
            why,
            fix: None,
        }
    }

    fn ok(mut self, detail: impl Into<String>) -> Check {
        self.detail = detail.into();
        self
    }

    fn problem(
        mut self,
        status: CheckStatus,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        self.status = status;
        self.detail = detail.into();
        self.fix = Some(fix.into());
        self
    }
}

/// The Debian package that provides QEMU for this host's architecture.
fn qemu_package() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "qemu-system-arm"
    } else {
        "qemu-system-x86"
    }
}

/// The default backend: `available` is `Err(reason)` when it cannot run here.
pub fn hypervisor(kind: HypervisorKind, available: Result<(), &str>) -> Check {
    let check = Check::new(
        "hypervisor",
        "Hypervisor",
        "Every sandbox is a virtual machine; the hypervisor runs it.",
    );
    match available {
        Ok(()) => check.ok(format!("{} is installed.", kind.as_str())),
        Err(reason) => {
            let fix = match kind {
                HypervisorKind::Vz => {
                    "Use macOS 13 or later on Apple silicon or Intel.".to_string()
                }
                HypervisorKind::Qemu if cfg!(target_os = "macos") => {
                    "brew install qemu".to_string()
                }
                HypervisorKind::Qemu => format!("sudo apt-get install {}", qemu_package()),
                _ => reason.to_string(),
            };
            check.problem(
                CheckStatus::Missing,
                format!("{}: {reason}", kind.as_str()),
                fix,
            )
        }
    }
}

/// Hardware virtualization (Linux: `/dev/kvm`). Without it QEMU emulates the CPU (TCG).
pub fn kvm(dev: &Path) -> Check {
    let check = Check::new(
        "kvm",
        "Hardware virtualization (KVM)",
        "With KVM sandboxes run at native speed; without it QEMU emulates the CPU, many times slower.",
    );
    if !dev.exists() {
        return check.problem(
            CheckStatus::Warning,
            format!("{} does not exist: sandboxes run under emulation (TCG).", dev.display()),
            "Enable virtualization (VT-x / AMD-V) in the firmware settings, then: sudo modprobe kvm_intel || sudo modprobe kvm_amd",
        );
    }
    match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(_) => check.ok(format!(
            "{} is usable (QEMU still falls back to emulation if KVM does not answer).",
            dev.display()
        )),
        Err(e) => check.problem(
            CheckStatus::Warning,
            format!(
                "{} cannot be opened ({e}): sandboxes run under emulation (TCG).",
                dev.display()
            ),
            "sudo usermod -aG kvm \"$USER\"   # then log out and back in",
        ),
    }
}

/// The guest kernel: `deb` is `HYPEDECK_KERNEL_DEB` when set.
pub async fn kernel(system: &Path, deb: Option<&Path>) -> Check {
    let check = Check::new(
        "kernel",
        "Guest kernel",
        "Sandboxes boot a Linux kernel: Debian's cloud kernel, shipped with the app (else fetched once with apt) and cached.",
    );
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    match hypedeck_boot::probe_kernel(system, deb).await {
        Ok(hypedeck_boot::KernelSource::Bundled { dir, manifest }) => check.ok(format!(
            "Linux {} ({} {}) ships with the app, in {}; it needs no network.{}",
            manifest.release,
            manifest.package,
            manifest.version,
            dir.display(),
            if deb.is_some() {
                " The kernel package setting is not used while the app carries a kernel."
            } else {
                ""
            }
        )),
        Err(e @ hypedeck_boot::BootError::Kernel(_)) if hypedeck_boot::find_bundle().is_some() => {
            check.problem(
                CheckStatus::Missing,
                e.to_string(),
                "Reinstall Hypedeck, or set HYPEDECK_KERNEL_BUNDLE=off to use a kernel .deb or apt.",
            )
        }
        Ok(hypedeck_boot::KernelSource::Cached { version }) => {
            check.ok(format!("Linux {version} is cached in {}.", system.join("kernel").display()))
        }
        Ok(hypedeck_boot::KernelSource::Apt { package }) => check.ok(format!(
            "{package} will be downloaded with apt (no root needed) when the first sandbox starts."
        )),
        Ok(hypedeck_boot::KernelSource::Deb { path, package }) => check.ok(format!(
            "{package} from {} (HYPEDECK_KERNEL_DEB) will be unpacked when the first sandbox starts.",
            path.display()
        )),
        Err(hypedeck_boot::BootError::Missing(tool)) => check.problem(
            CheckStatus::Missing,
            format!("{tool} is not installed, so the kernel cannot be fetched with apt."),
            format!(
                "On a Debian or Ubuntu machine: apt-get download linux-image-cloud-{arch}; copy the .deb here and set HYPEDECK_KERNEL_DEB=/path/to/linux-image-….deb"
            ),
        ),
        Err(e) if deb.is_some() => check.problem(
            CheckStatus::Missing,
            e.to_string(),
            format!(
                "Point HYPEDECK_KERNEL_DEB at a kernel package (apt-get download linux-image-cloud-{arch}), or unset it to use apt."
            ),
        ),
        Err(e) => check.problem(CheckStatus::Missing, e.to_string(), "sudo apt-get update"),
    }
}

/// `hypedeck-guest-init`, the guest's PID 1 (also the sample image's program).
pub fn guest_init() -> Check {
    let check = Check::new(
        "guest_init",
        "Guest init",
        "hypedeck-guest-init starts each sandbox's program, reports its exit and serves exec.",
    );
    match hypedeck_boot::find_guest_init() {
        Ok(path) => check.ok(format!("Found at {}.", path.display())),
        Err(e) => check.problem(
            CheckStatus::Missing,
            e.to_string(),
            "make guest-init   # in a source checkout; or reinstall the hypedeck package",
        ),
    }
}

/// The OS keychain: `reachable` is `Err(reason)` when it does not answer.
pub fn keychain(reachable: Result<(), &str>) -> Check {
    let check = Check::new(
        "keychain",
        "OS keychain",
        "Real credential values and the API token live only in the OS keychain, never on disk.",
    );
    match reachable {
        Ok(()) => check.ok(if cfg!(target_os = "macos") {
            "The macOS Keychain answers."
        } else {
            "A Secret Service (e.g. GNOME Keyring) answers on the session bus."
        }),
        Err(reason) => check.problem(
            CheckStatus::Missing,
            reason.to_string(),
            if cfg!(target_os = "macos") {
                "Unlock the login keychain (Keychain Access), then re-check."
            } else {
                "sudo apt-get install gnome-keyring   # then log in to a desktop session, or run: gnome-keyring-daemon --start --components=secrets"
            },
        ),
    }
}

impl crate::Engine {
    /// Every check for this engine's host and data dir. The keychain is reachable by
    /// construction (the engine runs on it); the kernel is checked for the data dir's `system/`
    /// with `HYPEDECK_KERNEL_DEB` as the engine's boot would read it.
    pub async fn checks(&self) -> Vec<Check> {
        let default = self.hypervisors().into_iter().find(|b| b.default);
        let hypervisor_check = match (&default, &self.hypervisor) {
            (Some(b), _) => hypervisor(
                b.kind,
                b.capabilities.as_ref().map(|_| ()).map_err(String::as_str),
            ),
            (None, Err(reason)) => hypervisor(host_default(), Err(reason)),
            (None, Ok(h)) => hypervisor(h.kind(), Ok(())),
        };
        all(hypervisor_check, &self.paths.system(), Ok(())).await
    }
}

/// The whole list, in the order the UI shows it, around an already made hypervisor check:
/// KVM (Linux), the guest kernel for `system` (with `HYPEDECK_KERNEL_DEB` or the settings'
/// kernel as boot reads it), the guest init, the keychain (`Err(reason)` when it does not
/// answer). The engine and the engine-less callers (`hypedeck doctor`, the desktop shell)
/// both build their list here.
pub async fn all(
    hypervisor_check: Check,
    system: &Path,
    keychain_state: Result<(), &str>,
) -> Vec<Check> {
    let deb = hypedeck_boot::kernel_deb();
    let mut checks = vec![hypervisor_check];
    if cfg!(target_os = "linux") {
        checks.push(kvm(Path::new("/dev/kvm")));
    }
    checks.push(kernel(system, deb.as_deref()).await);
    checks.push(guest_init());
    checks.push(keychain(keychain_state));
    checks
}

/// The backend a host runs by default: vz on macOS, QEMU elsewhere.
pub fn host_default() -> HypervisorKind {
    if cfg!(target_os = "macos") {
        HypervisorKind::Vz
    } else {
        HypervisorKind::Qemu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_absent_is_a_warning_with_a_fix() {
        let c = kvm(Path::new("/nonexistent/kvm"));
        assert_eq!(c.status, CheckStatus::Warning);
        assert!(c.detail.contains("does not exist"), "{}", c.detail);
        assert!(c.fix.unwrap().contains("modprobe"));
    }

    #[test]
    fn kvm_unopenable_is_a_warning_naming_the_group() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be opened for writing: stands in for a device without access.
        let c = kvm(dir.path());
        assert_eq!(c.status, CheckStatus::Warning);
        assert!(c.fix.unwrap().contains("usermod -aG kvm"));
    }

    #[test]
    fn missing_backend_and_keychain_say_how_to_fix() {
        let c = hypervisor(
            HypervisorKind::Qemu,
            Err("qemu-system-x86_64 was not found on PATH"),
        );
        assert_eq!(c.status, CheckStatus::Missing);
        assert_eq!(c.detail, "qemu: qemu-system-x86_64 was not found on PATH");
        assert!(c.fix.unwrap().starts_with(if cfg!(target_os = "macos") {
            "brew"
        } else {
            "sudo apt-get install qemu-system-"
        }));
        let ok = hypervisor(HypervisorKind::Qemu, Ok(()));
        assert_eq!((ok.status, ok.fix), (CheckStatus::Ok, None));
        let k = keychain(Err("the OS keychain is not available: no Secret Service"));
        assert_eq!(k.status, CheckStatus::Missing);
        assert!(k.fix.is_some());
        let json = serde_json::to_value(keychain(Ok(()))).unwrap();
        assert_eq!(json["status"], "ok");
        assert!(json.get("fix").is_none());
    }

    #[tokio::test]
    async fn a_missing_kernel_deb_is_missing_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("linux-image.deb");
        let c = kernel(dir.path(), Some(&deb)).await;
        assert_eq!(c.status, CheckStatus::Missing);
        assert!(
            c.detail.contains(&deb.display().to_string()),
            "{}",
            c.detail
        );
        assert!(c.fix.unwrap().contains("HYPEDECK_KERNEL_DEB"));
    }
}
