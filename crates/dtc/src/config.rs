//! `--config FILE`: settings from a TOML file, one table per subcommand whose keys are the
//! subcommand's long flags (with `_` or `-`):
//!
//! ```toml
//! [coordinator]
//! port = 5000
//! heartbeat_timeout_ms = 1000
//!
//! [router]
//! port = 6000
//! shard = ["127.0.0.1:5000", "127.0.0.1:5001"]   # a list repeats the flag
//!
//! [worker]
//! slots = 8
//! ```
//!
//! The file's settings become flags placed before the ones typed, so a typed flag wins; a
//! flag from the file wins over its environment variable, and both over the default.

use crate::cli::Cli;
use anyhow::{Context, bail};
use clap::CommandFactory;
use std::ffi::OsString;
use std::path::Path;

/// The command line with the settings of `--config FILE` (if given) spliced in after the
/// subcommand's name.
pub fn expand(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let Some(path) = config_path(&args) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading --config {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing --config {} as TOML", path.display()))?;
    // The subcommand is the first argument that names one.
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    let Some(at) = args
        .iter()
        .skip(1)
        .position(|a| names.iter().any(|n| a.to_string_lossy() == n.as_str()))
        .map(|p| p + 1)
    else {
        return Ok(args);
    };
    let sub = args[at].to_string_lossy().into_owned();
    let Some(section) = table.get(&sub) else {
        return Ok(args);
    };
    let Some(section) = section.as_table() else {
        bail!(
            "--config {}: [{sub}] must be a table of settings",
            path.display()
        );
    };
    let command = Cli::command();
    let known: Vec<String> = command
        .find_subcommand(&sub)
        .map(|c| {
            c.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut injected = Vec::new();
    for (key, value) in section {
        let long = key.replace('_', "-");
        if !known.contains(&long) {
            bail!(
                "--config {}: [{sub}] {key} is not a setting of `dtc {sub}` (see `dtc {sub} --help`)",
                path.display()
            );
        }
        let flag = format!("--{long}");
        push_setting(&mut injected, &flag, value)
            .with_context(|| format!("--config {}: [{sub}] {key}", path.display()))?;
    }
    let mut out = args;
    out.splice(at + 1..at + 1, injected);
    Ok(out)
}

fn push_setting(out: &mut Vec<OsString>, flag: &str, value: &toml::Value) -> anyhow::Result<()> {
    match value {
        toml::Value::Boolean(true) => out.push(flag.into()),
        toml::Value::Boolean(false) => {}
        toml::Value::String(s) => out.extend([flag.into(), s.into()]),
        toml::Value::Integer(n) => out.extend([flag.into(), n.to_string().into()]),
        toml::Value::Float(x) => out.extend([flag.into(), x.to_string().into()]),
        toml::Value::Array(items) => {
            for item in items {
                push_setting(out, flag, item)?;
            }
        }
        other => bail!("unsupported value {other} (use a string, number, boolean or list)"),
    }
    Ok(())
}

/// The value of `--config FILE` or `--config=FILE`, wherever it stands.
fn config_path(args: &[OsString]) -> Option<std::path::PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return it.next().map(|v| Path::new(v).to_path_buf());
        }
        if let Some(v) = text.strip_prefix("--config=") {
            return Some(Path::new(v).to_path_buf());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;
    use clap::Parser;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn with_file(text: &str, f: impl FnOnce(&str)) -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!(
            "dtc-config-test-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("dtc.toml");
        std::fs::write(&path, text)?;
        f(&path.to_string_lossy());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn file_settings_apply_and_typed_flags_win() -> anyhow::Result<()> {
        let text = "[worker]\nslots = 8\nheartbeat_ms = 50\nname = \"from-file\"\n[router]\nshard = [\"127.0.0.1:5000\", \"127.0.0.1:5001\"]\n";
        with_file(text, |path| {
            let typed = args(&[
                "dtc", "--config", path, "worker", "-p", "5000", "--slots", "2",
            ]);
            let cli = expand(typed).ok().and_then(|a| Cli::try_parse_from(a).ok());
            match cli.map(|c| c.command) {
                Some(Command::Worker(w)) => {
                    assert_eq!(w.slots, 2, "the typed flag wins");
                    assert_eq!(w.heartbeat_ms, 50);
                    assert_eq!(w.name.as_deref(), Some("from-file"));
                }
                other => panic!("parsed as {other:?}"),
            }
            let router = expand(args(&["dtc", "router", &format!("--config={path}")]))
                .ok()
                .and_then(|a| Cli::try_parse_from(a).ok());
            match router.map(|c| c.command) {
                Some(Command::Router(r)) => {
                    assert_eq!(r.shards.len(), 2, "a list repeats the flag")
                }
                other => panic!("parsed as {other:?}"),
            }
        })
    }

    #[test]
    fn bad_files_are_explained() -> anyhow::Result<()> {
        let missing = expand(args(&[
            "dtc",
            "--config",
            "/nonexistent/dtc.toml",
            "worker",
        ]));
        assert!(
            missing
                .err()
                .is_some_and(|e| format!("{e:#}").contains("reading --config"))
        );
        with_file("[worker\nslots = 8", |path| {
            let bad = expand(args(&["dtc", "--config", path, "worker"]));
            assert!(bad.err().is_some_and(|e| format!("{e:#}").contains("TOML")));
        })?;
        with_file("[worker]\nnope = 1\n", |path| {
            let unknown = expand(args(&["dtc", "--config", path, "worker", "-p", "1"]));
            assert!(unknown.err().is_some_and(|e| {
                format!("{e:#}").contains("nope is not a setting of `dtc worker`")
            }));
        })
    }
}
