//! `margay-cni`: the entry point a container runtime executes.

use std::io::{Read, Write};
use std::process::ExitCode;

use margay_cni::error::{CniError, Code};
use margay_cni::plugin::{self, Env, NetConf};
use margay_cni::version;
use serde_json::Value;

fn read_conf() -> Result<(NetConf, Value), CniError> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| {
        CniError::new(
            Code::Io,
            format!("cannot read the network configuration from stdin: {e}"),
            None,
        )
    })?;
    let raw: Value = serde_json::from_str(&text).map_err(|e| {
        CniError::new(
            Code::Decode,
            format!("the network configuration is not JSON: {e}"),
            None,
        )
    })?;
    let conf: NetConf = serde_json::from_value(raw.clone()).map_err(|e| {
        CniError::new(
            Code::InvalidConfig,
            format!("invalid network configuration: {e}"),
            None,
        )
    })?;
    if !conf.cni_version.is_empty() && !version::is_supported(&conf.cni_version) {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!("cniVersion {} is not supported", conf.cni_version),
            Some(format!(
                "margay-cni speaks {}",
                version::SUPPORTED.join(", ")
            )),
        ));
    }
    Ok((conf, raw))
}

fn run(command: &str) -> Result<Option<Value>, (CniError, String)> {
    let fail = |e: CniError| (e, String::new());
    if command == "VERSION" {
        return Ok(Some(
            serde_json::to_value(version::version_info()).expect("serialisable"),
        ));
    }
    let known = ["ADD", "DEL", "CHECK", "GC", "STATUS"];
    if !known.contains(&command) {
        return Err(fail(CniError::new(
            Code::InvalidEnvironment,
            format!("unknown CNI_COMMAND {command:?}"),
            Some("CNI_COMMAND must be one of ADD, DEL, CHECK, GC, STATUS, VERSION".into()),
        )));
    }
    let (conf, raw) = read_conf().map_err(fail)?;
    let env = Env::from(|k| std::env::var(k).ok());
    let v = conf.cni_version.clone();
    let res = match command {
        "ADD" => plugin::add(&conf, &env).map(Some),
        "DEL" => plugin::del(&conf, &env).map(|()| None),
        "CHECK" => plugin::check(&conf, &env).map(|()| None),
        "STATUS" => plugin::status(&conf).map(|()| None),
        _ => plugin::gc(&conf, &raw).map(|()| None),
    };
    res.map_err(|e| (e, v))
}

fn main() -> ExitCode {
    let result = match std::env::var("CNI_COMMAND") {
        Ok(cmd) => run(&cmd),
        Err(_) => Err((
            CniError::new(
                Code::InvalidEnvironment,
                "CNI_COMMAND is not set",
                Some("margay-cni is run by a container runtime with CNI_COMMAND=ADD|DEL|CHECK|GC|STATUS|VERSION".into()),
            ),
            String::new(),
        )),
    };
    let mut out = std::io::stdout().lock();
    match result {
        Ok(Some(json)) => {
            let _ = writeln!(out, "{json}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err((e, version)) => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(&e.in_version(&version)).expect("CniError serialises")
            );
            ExitCode::FAILURE
        }
    }
}
