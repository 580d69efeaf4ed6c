//! Shared configuration plumbing: `--set section.key=value` and environment
//! overrides applied to a TOML document before it is deserialized, so every
//! binary overrides options the same way.

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
    #[test]
    fn typed_values_and_sections() {
        let mut t = toml::Table::new();
        super::set_path(&mut t, "a.b", "3").unwrap();
        super::set_path(&mut t, "a.c", "plain text").unwrap();
        super::set_path(&mut t, "x", "[\"q\"]").unwrap();
        assert_eq!(t["a"]["b"].as_integer(), Some(3));
        assert_eq!(t["a"]["c"].as_str(), Some("plain text"));
        assert!(t["x"].is_array());
        assert!(
            super::set_path(&mut t, "a.b.c", "1")
                .unwrap_err()
                .contains("a.b.c")
        );
    }
}
