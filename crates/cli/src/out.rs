//! Writing results to standard output without panicking when the reader goes away
//! (`medicodax audit tail | head` must end quietly, not with a broken-pipe panic).

use std::io::Write;

/// Writes `text` and a newline to standard output. A closed pipe ends the process
/// quietly with success, as Unix filters do; other write errors are reported.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let res = out.write_all(text.as_bytes()).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush());
    if let Err(e) = res {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Writes a value as pretty JSON.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => line(&s),
        Err(e) => {
            eprintln!("error: cannot serialise the result: {e}");
            std::process::exit(1);
        }
    }
}

/// Standard output as a `Write` for streaming exports: a closed pipe ends the process
/// quietly with success, like [`line`].
pub struct PipeOut(std::io::Stdout);

impl PipeOut {
    /// Standard output.
    pub fn new() -> Self {
        PipeOut(std::io::stdout())
    }
}

impl Write for PipeOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).inspect_err(|e| quiet_on_broken_pipe(e))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().inspect_err(|e| quiet_on_broken_pipe(e))
    }
}

fn quiet_on_broken_pipe(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
}
