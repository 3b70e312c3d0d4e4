//! The `cloud-hypervisor` process and the serial pump: spawn detached (own process group, so
//! they outlive the engine and its Ctrl-C), find again from our pidfiles, tell whether they
//! live. Liveness is read from `/proc`: zombies count as dead, and pid reuse is ruled out by
//! the command line (it must name this runtime dir's API socket or serial FIFO).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use hypedeck_hypervisor::HypervisorError;

use crate::client::Client;
use crate::config::RuntimeFiles;

/// How long a fresh VMM may take to answer `vmm.ping`.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

fn start_error(detail: String) -> HypervisorError {
    HypervisorError::Operation {
        operation: "start cloud-hypervisor",
        detail,
    }
}

/// Starts `cloud-hypervisor --api-socket path=<ch.sock> --log-file <vmm.log>` detached, writes
/// our pidfile, and returns once the API answers `vmm.ping`. On error nothing is left running.
pub async fn spawn(binary: &Path, files: &RuntimeFiles) -> Result<u32, HypervisorError> {
    let api = files.api.display().to_string();
    if api.contains(',') {
        // Cloud Hypervisor splits option values on commas.
        return Err(start_error(format!(
            "the runtime dir {api} contains a comma, which cloud-hypervisor cannot parse"
        )));
    }
    for stale in [&files.pidfile, &files.api, &files.vsock] {
        let _ = std::fs::remove_file(stale);
    }
    let (out, err) = hypedeck_hypervisor::process::append_log(&files.vmm_output)
        .map_err(HypervisorError::Start)?;
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("--api-socket")
        .arg(format!("path={api}"))
        .arg("--log-file")
        .arg(&files.vmm_log)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn().map_err(HypervisorError::Start)?;
    let Some(pid) = child.id() else {
        return Err(start_error("cloud-hypervisor exited at once".into()));
    };
    if let Err(e) = write_pid(&files.pidfile, pid) {
        let _ = child.kill().await;
        return Err(HypervisorError::Start(e));
    }
    let client = Client::new(&files.api);
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let _ = std::fs::remove_file(&files.pidfile);
            return Err(start_error(format!(
                "{} exited with {status}: {}",
                binary.display(),
                last_words(files)
            )));
        }
        if client.ping(Duration::from_millis(500)).await.is_ok() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill().await;
            let _ = std::fs::remove_file(&files.pidfile);
            return Err(start_error(format!(
                "{} did not answer on {api} within {}s: {}",
                binary.display(),
                START_TIMEOUT.as_secs(),
                last_words(files)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Reap it when it exits while this engine runs (after a restart it is init's child).
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(pid)
}

/// The last non-empty line the VMM printed (stderr first, then its log file).
fn last_words(files: &RuntimeFiles) -> String {
    [&files.vmm_output, &files.vmm_log]
        .iter()
        .find_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "no output".into())
}

/// Writes a pidfile atomically (tmp + rename).
fn write_pid(path: &Path, pid: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, path)
}

pub use hypedeck_hypervisor::process::{kill, read_pid, reap};

/// Whether `pid` is a live (not zombie) process whose command line mentions `needle` (the
/// API socket of a VMM, the FIFO of a serial pump).
pub fn is_alive(pid: u32, needle: &Path) -> bool {
    hypedeck_hypervisor::process::is_alive(pid, &needle.display().to_string())
}

/// Waits up to `timeout` for `pid` to stop being [`is_alive`].
pub async fn wait_dead(pid: u32, needle: &Path, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        reap(pid);
        if !is_alive(pid, needle) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the serial pump: a fresh FIFO at `files.serial_fifo` and a detached
/// `cat <fifo> >> <app_log>`, so the guest's console appends to the app log although Cloud
/// Hypervisor truncates its serial file. A pump left from an earlier run is stopped first.
pub async fn start_serial_pump(
    files: &RuntimeFiles,
    app_log: &Path,
) -> Result<(), HypervisorError> {
    stop_serial_pump(files).await;
    let _ = std::fs::remove_file(&files.serial_fifo);
    make_fifo(&files.serial_fifo).map_err(HypervisorError::Start)?;
    if let Some(dir) = app_log.parent() {
        std::fs::create_dir_all(dir).map_err(HypervisorError::Start)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(app_log)
        .map_err(HypervisorError::Start)?;
    let mut command = tokio::process::Command::new("cat");
    command
        .arg(&files.serial_fifo)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::null());
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn().map_err(HypervisorError::Start)?;
    let Some(pid) = child.id() else {
        return Err(start_error("the serial pump (cat) exited at once".into()));
    };
    if let Err(e) = write_pid(&files.serial_pidfile, pid) {
        let _ = child.kill().await;
        return Err(HypervisorError::Start(e));
    }
    if let Err(detail) = wait_seen(&mut child, pid, &files.serial_fifo).await {
        let _ = child.kill().await;
        let _ = std::fs::remove_file(&files.serial_pidfile);
        return Err(start_error(detail));
    }
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(())
}

/// Waits up to 2 s until the pump just spawned as `child` is [`is_alive`]. `spawn` returns
/// once the kernel has switched the child to the new program, but before it has set up the
/// new argv, so for a moment /proc/<pid>/cmdline is empty and the pump does not look alive.
/// A stop in that moment would take it for ended and leave `cat` blocked in `open` for good;
/// so start returns only once the pump is seen.
async fn wait_seen(child: &mut tokio::process::Child, pid: u32, fifo: &Path) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !is_alive(pid, fifo) {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the serial pump (cat) exited at once ({status})"));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("the serial pump (cat) did not start within 2 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Stops the serial pump. It ends by itself when the VMM closes the FIFO; this waits briefly
/// for that (so no console output is lost) and then kills it (a VMM that never opened the
/// FIFO leaves it blocked in `open`).
pub async fn stop_serial_pump(files: &RuntimeFiles) {
    if let Some(pid) = read_pid(&files.serial_pidfile)
        && !wait_dead(pid, &files.serial_fifo, Duration::from_millis(200)).await
    {
        kill(pid);
        wait_dead(pid, &files.serial_fifo, Duration::from_secs(1)).await;
    }
    let _ = std::fs::remove_file(&files.serial_pidfile);
}

#[cfg(unix)]
fn make_fifo(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn make_fifo(_path: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "FIFOs need a unix host",
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::fake_api::set_executable;

    #[tokio::test]
    async fn serial_pump_appends_across_truncating_writers() {
        let dir = tempfile::tempdir().unwrap();
        let files = RuntimeFiles::in_dir(dir.path());
        let log = dir.path().join("logs/app.log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "earlier run\n").unwrap();
        for line in ["first boot\n", "after restore\n"] {
            start_serial_pump(&files, &log).await.unwrap();
            let pid = read_pid(&files.serial_pidfile).unwrap();
            assert!(is_alive(pid, &files.serial_fifo));
            // What Cloud Hypervisor does: File::create (O_TRUNC) on the serial target.
            let fifo = files.serial_fifo.clone();
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut f = std::fs::File::create(fifo).unwrap();
                f.write_all(line.as_bytes()).unwrap();
            })
            .await
            .unwrap();
            assert!(wait_dead(pid, &files.serial_fifo, Duration::from_secs(5)).await);
            stop_serial_pump(&files).await;
        }
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "earlier run\nfirst boot\nafter restore\n"
        );
    }

    #[tokio::test]
    async fn a_pump_whose_vmm_never_opened_the_fifo_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let files = RuntimeFiles::in_dir(dir.path());
        start_serial_pump(&files, &dir.path().join("app.log"))
            .await
            .unwrap();
        let pid = read_pid(&files.serial_pidfile).unwrap();
        assert!(is_alive(pid, &files.serial_fifo));
        stop_serial_pump(&files).await;
        assert!(!is_alive(pid, &files.serial_fifo));
        assert!(!files.serial_pidfile.exists());
    }

    #[tokio::test]
    async fn liveness_checks_the_command_line_and_zombies() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker.sock");
        // A process whose argv names the marker, like a VMM names its API socket.
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg("sleep 30")
            .arg(&marker)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if std::fs::read_to_string(format!("/proc/{pid}/stat")).is_err() {
            eprintln!("no /proc: liveness cannot be read on this host");
            return;
        }
        assert!(is_alive(pid, &marker));
        assert!(
            !is_alive(pid, &dir.path().join("other.sock")),
            "pid reuse guard"
        );
        kill(pid);
        assert!(wait_dead(pid, &marker, Duration::from_secs(5)).await);
        assert!(!is_alive(u32::MAX - 1, &marker));
    }

    #[tokio::test]
    async fn a_binary_that_exits_is_reported_with_its_last_words() {
        let dir = tempfile::tempdir().unwrap();
        let files = RuntimeFiles::in_dir(dir.path());
        let script = dir.path().join("fake-ch");
        std::fs::write(
            &script,
            "#!/bin/sh\necho \"Error: bad seccomp\" >&2\nexit 3\n",
        )
        .unwrap();
        set_executable(&script);
        let err = spawn(&script, &files).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("exited with exit status: 3"), "{msg}");
        assert!(msg.contains("Error: bad seccomp"), "{msg}");
        assert!(!files.pidfile.exists());

        let missing = spawn(&dir.path().join("nope"), &files).await.unwrap_err();
        assert!(matches!(missing, HypervisorError::Start(_)), "{missing:?}");

        let comma = RuntimeFiles::in_dir(&dir.path().join("a,b"));
        let msg = spawn(&script, &comma).await.unwrap_err().to_string();
        assert!(msg.contains("comma"), "{msg}");
    }
}
