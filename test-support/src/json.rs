//! Reading the API's JSON answers in one line.

use serde_json::Value;

/// The elements of the array `v`; panics (showing `v`) if it is not one.
pub fn array(v: &Value) -> &[Value] {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}"))
}

/// The elements of the array `v`, each a string.
pub fn strs(v: &Value) -> Vec<&str> {
    array(v).iter().map(as_str).collect()
}

/// The string `field` of every element of the array `v`.
pub fn field_strs<'a>(v: &'a Value, field: &str) -> Vec<&'a str> {
    array(v).iter().map(|x| as_str(&x[field])).collect()
}

/// The `id` of an API object.
pub fn id(v: &Value) -> &str {
    as_str(&v["id"])
}

/// The IDs of the CA generations in `state` in a `/v1/ca` answer.
pub fn ca_ids(status: &Value, state: &str) -> Vec<String> {
    array(&status["cas"])
        .iter()
        .filter(|c| c["state"] == state)
        .map(|c| as_str(&c["id"]).to_owned())
        .collect()
}

fn as_str(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}
