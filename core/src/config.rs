//! Configuration loading shared by every binary: a TOML file, then
//! environment overrides (`<PREFIX>SECTION__KEY=value`), then
//! `--set section.key=value` flags, applied to one TOML document before it is
//! deserialized once into the binary's typed configuration. One
//! implementation, so the CA server, the agent and the sidecar override
//! options the same way (and an unknown option is an error everywhere).

use serde::de::DeserializeOwned;
use std::ffi::OsString;
use std::path::Path;

/// A configuration error, naming the option (and, for overrides, where it
/// came from).
#[derive(Debug, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

/// No environment overrides: for loading a configuration from the file and
/// flags alone (tests, tools).
pub const NO_ENV: [(&str, &str); 0] = [];

/// A binary's typed configuration: the prefix of its environment overrides
/// and the checks across options that deserializing cannot express.
pub trait Options: DeserializeOwned {
    /// The prefix of the environment variables that override options, such
    /// as `TESSERA_SIDECAR__` (`TESSERA_SIDECAR__LIMITS__MAX_INBOUND_CONNECTIONS=512`
    /// sets `limits.max_inbound_connections`).
    const ENV_PREFIX: &'static str;

    /// Checks across options; the error names the option at fault.
    fn validate(&self) -> Result<(), ConfigError>;

    /// Loads the file (if any), applies the environment (`ENV_PREFIX`) and
    /// then the `--set` overrides (see [`load`]), and validates.
    fn load<K: Into<OsString>, V: Into<OsString>>(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (K, V)>,
        sets: &[String],
    ) -> Result<Self, ConfigError> {
        let cfg: Self = load(file, Self::ENV_PREFIX, env, sets)?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Reads `file` (if any), applies the environment variables that start with
/// `env_prefix` (`PREFIX` + `SECTION__KEY`, case-insensitive key, `__`
/// separating sections) and then each `--set key=value`, and deserializes
/// the result. Later sources win. Values are typed as TOML would type them
/// (see [`set_path`]).
pub fn load<T, K, V>(
    file: Option<&Path>,
    env_prefix: &str,
    env: impl IntoIterator<Item = (K, V)>,
    sets: &[String],
) -> Result<T, ConfigError>
where
    T: DeserializeOwned,
    K: Into<OsString>,
    V: Into<OsString>,
{
    let mut doc: toml::Table = match file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| ConfigError(format!("{}: {e}", p.display())))?;
            toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", p.display())))?
        }
        None => toml::Table::new(),
    };
    for (name, value) in env_overrides(env_prefix, env)? {
        set_path(&mut doc, &name.1, &value)
            .map_err(|e| ConfigError(format!("{e} (from the environment variable {})", name.0)))?;
    }
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| ConfigError("--set: expected section.key=value".into()))?;
        set_path(&mut doc, k, v).map_err(|e| ConfigError(format!("{e} (from --set)")))?;
    }
    toml::Value::Table(doc)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError(e.to_string().trim_end().to_owned()))
}

/// The overrides among `env`, sorted by variable name so that the result does
/// not depend on the environment's order: ((variable, option path), value).
#[allow(clippy::type_complexity)]
fn env_overrides<K: Into<OsString>, V: Into<OsString>>(
    prefix: &str,
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<Vec<((String, String), String)>, ConfigError> {
    let mut out = Vec::new();
    for (k, v) in env {
        let (k, v) = (k.into(), v.into());
        let Some(name) = k.to_str() else { continue };
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let value = v.into_string().map_err(|_| {
            ConfigError(format!(
                "the environment variable {name} is not valid UTF-8"
            ))
        })?;
        let path = rest.to_ascii_lowercase().replace("__", ".");
        out.push(((name.to_owned(), path), value));
    }
    out.sort();
    Ok(out)
}

/// Sets `a.b.c = value` in a TOML table, typing the value as TOML would
/// (integers, booleans, arrays and quoted strings parse; anything else is
/// taken as a string). The error names the option.
pub fn set_path(doc: &mut toml::Table, key: &str, value: &str) -> Result<(), String> {
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let mut parts: Vec<&str> = key.trim().split('.').collect();
    let last = parts
        .pop()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{key}: empty option name"))?;
    let mut table = doc;
    for p in parts {
        table = table
            .entry(p.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("{key}: {p} is not a section"))?;
    }
    table.insert(last.to_owned(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        #[serde(default)]
        limits: Limits,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Limits {
        max: u32,
        on: bool,
    }

    #[test]
    fn typed_values_and_sections() {
        let mut t = toml::Table::new();
        set_path(&mut t, "a.b", "3").unwrap();
        set_path(&mut t, "a.c", "plain text").unwrap();
        set_path(&mut t, "x", "[\"q\"]").unwrap();
        assert_eq!(t["a"]["b"].as_integer(), Some(3));
        assert_eq!(t["a"]["c"].as_str(), Some("plain text"));
        assert!(t["x"].is_array());
        assert!(
            set_path(&mut t, "a.b.c", "1")
                .unwrap_err()
                .contains("a.b.c")
        );
    }

    #[test]
    fn file_then_environment_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "name = \"file\"\n[limits]\nmax = 1\n").unwrap();
        let env = [
            ("OTHER__NAME", "ignored"),
            ("T_X__LIMITS__MAX", "7"),
            ("T_X__LIMITS__ON", "true"),
            ("T_X__NAME", "env"),
        ];
        let s: Sample = load(Some(&f), "T_X__", env, &[]).unwrap();
        assert_eq!(
            (s.name.as_str(), s.limits.max, s.limits.on),
            ("env", 7, true)
        );
        let s: Sample = load(Some(&f), "T_X__", env, &["limits.max=9".into()]).unwrap();
        assert_eq!((s.name.as_str(), s.limits.max), ("env", 9));
    }

    #[test]
    fn errors_name_the_option_and_its_source() {
        let e = load::<Sample, _, _>(
            None,
            "T__",
            [("T__LIMITS__BOGUS", "s3cret")],
            &["name=x".into()],
        )
        .unwrap_err();
        assert!(e.0.contains("bogus") && !e.0.contains("s3cret"), "{e}");
        // Sorted by variable: T__NAME is a string by the time T__NAME__X
        // would make it a section.
        let env = [("T__NAME__X", "y"), ("T__NAME", "x")];
        let e = load::<Sample, _, _>(None, "T__", env, &[]).unwrap_err();
        assert!(
            e.0.contains("name.x") && e.0.contains("environment variable T__NAME__X"),
            "{e}"
        );
        let e = load::<Sample, &str, &str>(None, "T__", [], &["limits.max".into()]).unwrap_err();
        assert!(e.0.contains("--set"), "{e}");
        let e = load::<Sample, &str, &str>(None, "T__", [], &["limits.max=\"many\"".into()])
            .unwrap_err();
        assert!(e.0.contains("max"), "{e}");
        let bad = std::os::unix::ffi::OsStringExt::from_vec(vec![0xff]);
        let e = load::<Sample, OsString, OsString>(
            None,
            "T__",
            [(OsString::from("T__NAME"), bad)],
            &[],
        )
        .unwrap_err();
        assert!(e.0.contains("T__NAME") && e.0.contains("UTF-8"), "{e}");
    }
}
