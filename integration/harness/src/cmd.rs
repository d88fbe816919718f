//! Running short-lived commands with errors that say what failed.

use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// What a finished command printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// A command line as a shell user would type it, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        s.push(' ');
        if a.is_empty() || a.contains(char::is_whitespace) || a.contains('\'') {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Runs `cmd` to completion (stdin closed) and returns its output, or an error carrying the
/// command line, exit status and stderr when it fails.
pub fn run_checked(cmd: &mut Command) -> Result<Output> {
    let command = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(Error::CommandFailed {
            command,
            status: out.status,
            stderr: stderr.trim().to_owned(),
            stdout: stdout.trim().to_owned(),
        });
    }
    Ok(Output { stdout, stderr })
}

/// Runs `cmd` with `input` on its standard input (closed after it) and returns how it ended,
/// with its standard output captured; standard error goes where `cmd` says (inherited unless
/// the caller set it to piped). For programs that read a document from stdin, as CNI plugins do.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> std::io::Result<std::process::Output> {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)?;
    child.wait_with_output()
}

/// Runs `argv` (program first) on the host and returns its output; see [`run_checked`].
pub fn run(argv: &[&str]) -> Result<Output> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| Error::invalid("command", "empty argument list"))?;
    run_checked(Command::new(prog).args(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_quotes_arguments_with_spaces() {
        let mut c = Command::new("vtysh");
        c.args(["-c", "show bgp summary", ""]);
        assert_eq!(describe(&c), "vtysh -c 'show bgp summary' ''");
    }

    #[test]
    fn failing_command_error_names_command_status_and_stderr() {
        let err = run(&["sh", "-c", "echo oops >&2; exit 3"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh -c 'echo oops >&2; exit 3'"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("oops"), "{msg}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run(&["/nonexistent/margay-nothing"]).unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }), "{err}");
    }
}
