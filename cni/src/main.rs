//! `margay-cni`: the entry point a container runtime executes.

use std::io::Write;
use std::process::ExitCode;

use margay_cni::error::{CniError, Code};
use margay_cni::version;

fn run(command: &str) -> Result<String, CniError> {
    match command {
        "VERSION" => {
            Ok(serde_json::to_string(&version::version_info()).expect("VersionInfo serialises"))
        }
        "ADD" | "DEL" | "CHECK" | "GC" | "STATUS" => Err(CniError::new(
            Code::TryAgainLater,
            format!(
                "{command} needs the Margay agent's local API, which this build of margay-cni does not speak yet"
            ),
            Some("use a margay-cni built together with margay-node".into()),
        )),
        other => Err(CniError::new(
            Code::InvalidEnvironment,
            format!("unknown CNI_COMMAND {other:?}"),
            Some("CNI_COMMAND must be one of ADD, DEL, CHECK, GC, STATUS, VERSION".into()),
        )),
    }
}

fn main() -> ExitCode {
    let result = match std::env::var("CNI_COMMAND") {
        Ok(cmd) => run(&cmd),
        Err(_) => Err(CniError::new(
            Code::InvalidEnvironment,
            "CNI_COMMAND is not set",
            Some("margay-cni is run by a container runtime with CNI_COMMAND=ADD|DEL|CHECK|GC|STATUS|VERSION".into()),
        )),
    };
    let mut out = std::io::stdout().lock();
    match result {
        Ok(json) => {
            let _ = writeln!(out, "{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(&e).expect("CniError serialises")
            );
            ExitCode::FAILURE
        }
    }
}
