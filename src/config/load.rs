//! Loading: the config file's text merged with `TAPD__SECTION__KEY` environment overrides
//! through the `config` crate, unknown keys named (and removed, so the rest is still checked),
//! then converted once by `validate` into the [`Config`] the daemon uses.
//!
//! May depend on: `config`'s own modules (`raw`, `validate`).

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::{raw, validate, ConfigError, Loaded, ENV_PREFIX};

/// Loads and validates the config file at `path` with overrides from this process's
/// `TAPD__…` environment variables. Relative paths in the file are resolved against the
/// file's directory.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string(&absolute).map_err(|err| ConfigError {
        problems: vec![format!("cannot read config file {}: {err}", path.display())],
    })?;
    let base_dir = absolute.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut warnings = Vec::new();
    let mut env = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str().filter(|key| is_tapd_var(key)) else {
            continue;
        };
        match value.into_string() {
            Ok(value) => env.push((key.to_owned(), value)),
            Err(_) => warnings.push(format!("{key}: ignored, value is not valid UTF-8")),
        }
    }
    let mut loaded = load_layers(&text, &env, &base_dir, Some(absolute))?;
    warnings.append(&mut loaded.warnings);
    loaded.warnings = warnings;
    Ok(loaded)
}

/// Loads and validates config text with the given environment (only `TAPD__…` entries are
/// looked at), resolving relative paths against `base_dir`. For tests and tools.
pub fn load_from_str(
    toml: &str,
    env: &[(String, String)],
    base_dir: &Path,
) -> Result<Loaded, ConfigError> {
    load_layers(toml, env, base_dir, None)
}

fn is_tapd_var(key: &str) -> bool {
    key.len() > ENV_PREFIX.len()
        && key.is_char_boundary(ENV_PREFIX.len())
        && key[..ENV_PREFIX.len()].eq_ignore_ascii_case(ENV_PREFIX)
}

/// What a dotted key names in the schema.
enum KeyKind {
    /// A scalar (string, number, bool, optional value).
    Scalar,
    /// A list of scalars (settable from the environment as comma-separated values).
    List,
    /// A table or an array of tables (not settable from the environment).
    Table,
}

fn key_kind(schema: &Json, path: &[&str]) -> Option<KeyKind> {
    let mut node = schema;
    for part in path {
        node = node.as_object()?.get(*part)?;
    }
    Some(match node {
        Json::Object(_) => KeyKind::Table,
        Json::Array(items) if items.iter().any(Json::is_object) => KeyKind::Table,
        Json::Array(_) => KeyKind::List,
        _ => KeyKind::Scalar,
    })
}

/// Removes every key of `actual` that the schema does not know, naming each in `problems` as a
/// `path: message` line. What is left can still be validated, so an unknown key does not hide
/// the other problems of the file.
fn remove_unknown_keys(schema: &Json, actual: &mut Json, path: &str, problems: &mut Vec<String>) {
    match (schema, actual) {
        (Json::Object(known), Json::Object(given)) => {
            let mut unknown = Vec::new();
            for (key, value) in given.iter_mut() {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match known.get(key) {
                    Some(expected) => remove_unknown_keys(expected, value, &child, problems),
                    None => {
                        let names: Vec<&str> = known.keys().map(String::as_str).collect();
                        problems.push(format!(
                            "{child}: unknown key (known here: {})",
                            names.join(", ")
                        ));
                        unknown.push(key.clone());
                    }
                }
            }
            for key in unknown {
                given.remove(&key);
            }
        }
        (Json::Array(known), Json::Array(given)) => {
            if let Some(element) = known.iter().find(|item| item.is_object()) {
                for (index, value) in given.iter_mut().enumerate() {
                    remove_unknown_keys(element, value, &format!("{path}[{index}]"), problems);
                }
            }
        }
        _ => {}
    }
}

/// `invalid type: … for key `a.b`` → `a.b: invalid type: …`, like every other problem.
fn key_first(message: &str) -> String {
    match message.rsplit_once(" for key `") {
        Some((what, rest)) => match rest.split_once('`') {
            Some((key, tail)) => format!("{key}: {what}{tail}"),
            None => message.to_owned(),
        },
        None => message.to_owned(),
    }
}

fn load_layers(
    toml: &str,
    env: &[(String, String)],
    base_dir: &Path,
    source: Option<PathBuf>,
) -> Result<Loaded, ConfigError> {
    let fail = |problem: String| ConfigError {
        problems: vec![problem],
    };
    let schema = serde_json::to_value(raw::RawConfig::schema_example())
        .map_err(|err| fail(format!("internal error building the key schema: {err}")))?;

    let mut warnings = Vec::new();
    let mut scalar_env = config::Map::new();
    let mut list_overrides: Vec<(String, Vec<String>)> = Vec::new();
    for (key, value) in env {
        if !is_tapd_var(key) {
            continue;
        }
        let lower = key[ENV_PREFIX.len()..].to_ascii_lowercase();
        let path: Vec<&str> = lower.split("__").collect();
        let dotted = path.join(".");
        match key_kind(&schema, &path) {
            Some(KeyKind::Scalar) => {
                scalar_env.insert(key.clone(), value.clone());
            }
            Some(KeyKind::List) => list_overrides.push((
                dotted,
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
            Some(KeyKind::Table) => warnings.push(format!(
                "{key}: ignored, `{dotted}` is a section or a list of tables and can only be set in the file"
            )),
            None => warnings.push(format!(
                "{key}: ignored, `{dotted}` is not a known config key"
            )),
        }
    }

    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX.trim_end_matches('_'))
                .prefix_separator("__")
                .separator("__")
                // Values stay strings: the `config` deserializer converts "200" or "false"
                // when the field is a number or a bool, and a string field keeps "0100"
                // verbatim (try_parsing would turn it into the integer 100).
                .try_parsing(false)
                .source(Some(scalar_env)),
        );
    for (key, items) in list_overrides {
        builder = builder
            .set_override(key.as_str(), items)
            .map_err(|err| fail(format!("{key}: {err}")))?;
    }
    let merged = builder.build().map_err(|err| fail(err.to_string()))?;

    let mut tree: Json = merged
        .clone()
        .try_deserialize()
        .map_err(|err| fail(err.to_string()))?;
    let mut problems = Vec::new();
    remove_unknown_keys(&schema, &mut tree, "", &mut problems);
    // With unknown keys removed, the rest is still validated so every problem is named at once.
    let known = if problems.is_empty() {
        merged
    } else {
        config::Config::try_from(&tree).map_err(|err| ConfigError {
            problems: [problems.clone(), vec![err.to_string()]].concat(),
        })?
    };
    let raw: raw::RawConfig = match known.try_deserialize() {
        Ok(raw) => raw,
        Err(err) => {
            problems.push(key_first(&err.to_string()));
            return Err(ConfigError { problems });
        }
    };
    let mut loaded = match validate::validate(raw, base_dir, source) {
        Ok(loaded) if problems.is_empty() => loaded,
        Ok(_) => return Err(ConfigError { problems }),
        Err(err) => {
            problems.extend(err.problems);
            return Err(ConfigError { problems });
        }
    };
    warnings.append(&mut loaded.warnings);
    loaded.warnings = warnings;
    Ok(loaded)
}
