//! Progress on stderr while a verb waits (`pull`, `run`'s pull, `wait`): on a terminal a
//! spinner with the current status and the time elapsed, redrawn in place and erased at the
//! end; elsewhere (a pipe, a file) plain status lines, one per change. Stdout is never
//! touched, so machine output stays clean.

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/// Whether stderr is a terminal (where spinners go).
pub fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal()
}

/// One spinner frame's line: `⠋ message (1.2s)`.
pub fn frame(tick: usize, message: &str, elapsed: Duration) -> String {
    format!(
        "{} {message} ({:.1}s)",
        FRAMES[tick % FRAMES.len()],
        elapsed.as_secs_f64()
    )
}

/// What the spinner draws, and whether it has been stopped (checked under the same lock as
/// each redraw, so nothing is drawn after the line is erased).
#[derive(Debug)]
struct State {
    message: String,
    stopped: bool,
    /// Off a terminal: print status lines (else nothing).
    lines: bool,
}

/// Progress of one wait on stderr.
#[derive(Debug)]
pub struct Progress {
    state: Arc<Mutex<State>>,
    spinner: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts showing `message`: a spinner when stderr is a terminal, else the line as is
    /// (and each new one, [`Progress::set`]).
    pub fn start(message: &str) -> Progress {
        Self::new(message, stderr_is_terminal(), true)
    }

    /// A spinner when stderr is a terminal; nothing at all otherwise.
    pub fn spinner(message: &str) -> Progress {
        Self::new(message, stderr_is_terminal(), false)
    }

    /// A spinner when `terminal`, else status lines when `lines`.
    pub fn new(message: &str, terminal: bool, lines: bool) -> Progress {
        let shared = Arc::new(Mutex::new(State {
            message: message.to_string(),
            stopped: false,
            lines,
        }));
        if !terminal {
            if lines {
                eprintln!("{message}");
            }
            return Progress {
                state: shared,
                spinner: None,
            };
        }
        let started = Instant::now();
        let text = shared.clone();
        let spinner = tokio::spawn(async move {
            let mut tick = 0usize;
            loop {
                {
                    let state = text.lock().unwrap_or_else(|p| p.into_inner());
                    if state.stopped {
                        return;
                    }
                    let line = frame(tick, &state.message, started.elapsed());
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{line}");
                    let _ = err.flush();
                }
                tick += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Progress {
            state: shared,
            spinner: Some(spinner),
        }
    }

    /// Shows `message` from now on (a new line when not on a terminal).
    pub fn set(&self, message: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.message == message {
            return;
        }
        state.message = message.to_string();
        if self.spinner.is_none() && state.lines {
            eprintln!("{message}");
        }
    }

    /// Stops the spinner and erases its line.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.stopped = true;
            spinner.abort();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_turn_and_show_the_time() {
        assert_eq!(
            frame(0, "Waiting", Duration::from_millis(1250)),
            "⠋ Waiting (1.2s)"
        );
        assert_eq!(frame(11, "x", Duration::ZERO), "⠙ x (0.0s)");
    }
}
