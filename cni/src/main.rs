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
    let mut phases = plugin::Phases::default();
    let res = match command {
        "ADD" => plugin::add_timed(&conf, &env, &mut phases).map(Some),
        "DEL" => plugin::del(&conf, &env).map(|()| None),
        "CHECK" => plugin::check(&conf, &env).map(|()| None),
        "STATUS" => plugin::status(&conf).map(|()| None),
        _ => plugin::gc(&conf, &raw).map(|()| None),
    };
    plugin::log(
        &conf,
        &env,
        command,
        &res.as_ref().map(|_| ()).map_err(ToString::to_string),
        &phases,
    );
    res.map_err(|e| (e, v))
}

/// `margay-cni install [--bin-dir D] [--conf-dir D] [--network N] [--agent-socket P] [--mtu M]`.
fn install(args: &[String]) -> ExitCode {
    let mut i = margay_cni::install::Install {
        binary: std::env::current_exe().unwrap_or_else(|_| "margay-cni".into()),
        bin_dir: "/opt/cni/bin".into(),
        conf_dir: "/etc/cni/net.d".into(),
        network: "k8s-pod-network".into(),
        agent_socket: margay_cni::plugin::DEFAULT_SOCKET.into(),
        mtu: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            eprintln!("margay-cni install: {flag} needs a value");
            return ExitCode::from(2);
        };
        match flag.as_str() {
            "--bin-dir" => i.bin_dir = value.into(),
            "--conf-dir" => i.conf_dir = value.into(),
            "--network" => i.network = value.clone(),
            "--agent-socket" => i.agent_socket = value.into(),
            "--mtu" => match value.parse() {
                Ok(m) => i.mtu = Some(m),
                Err(_) => {
                    eprintln!("margay-cni install: --mtu {value:?} is not a number");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!(
                    "margay-cni install: unknown flag {other:?}; use --bin-dir, --conf-dir, --network, --agent-socket or --mtu"
                );
                return ExitCode::from(2);
            }
        }
    }
    match i.run() {
        Ok((bin, conf)) => {
            println!("installed {} and {}", bin.display(), conf.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("margay-cni install: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("install") {
        return install(&args[1..]);
    }
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
