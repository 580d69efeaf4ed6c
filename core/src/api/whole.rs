//! Integer request fields that also take a whole number spelled as a float.
//!
//! JSON has one number type: `300.0` and `300` are the same integer to JSON
//! Schema, so an OpenAPI 3.1 client (schemathesis draws both spellings) may
//! send either. A fraction or a value out of range is still refused.

use serde::de::{Deserializer, Error, Unexpected, Visitor};
use std::fmt;

/// Reads an integer of type `T` from a JSON integer or a whole float.
struct Whole<T>(std::marker::PhantomData<T>);

impl<'de, T: TryFrom<i64> + TryFrom<u64>> Visitor<'de> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number in range")
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
        // Only floats that spell an integer exactly (|v| <= 2^53) count.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if v.fract() != 0.0 || !(-EXACT..=EXACT).contains(&v) {
            return Err(E::invalid_value(Unexpected::Float(v), &self));
        }
        // In range and whole, so the conversion is exact.
        #[allow(clippy::cast_possible_truncation)]
        self.visit_i64(v as i64)
    }
}

/// `#[serde(deserialize_with = "whole::int")]`: an integer field.
pub fn int<'de, D: Deserializer<'de>, T: TryFrom<i64> + TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(Whole(std::marker::PhantomData))
}

/// `#[serde(default, deserialize_with = "whole::opt")]`: an optional integer
/// field (`null` or absent is `None`).
pub fn opt<'de, D: Deserializer<'de>, T: TryFrom<i64> + TryFrom<u64>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    /// Wraps [`Whole`] for `Option`.
    struct Opt<T>(std::marker::PhantomData<T>);
    impl<'de, T: TryFrom<i64> + TryFrom<u64>> Visitor<'de> for Opt<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a whole number in range or null")
        }
        fn visit_none<E: Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            int(d).map(Some)
        }
    }
    d.deserialize_option(Opt(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct T {
        #[serde(default, deserialize_with = "super::opt")]
        ttl: Option<u64>,
        #[serde(deserialize_with = "super::int")]
        at: i64,
    }

    fn parse(s: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn whole_floats_are_integers_fractions_and_out_of_range_are_not() {
        let t = parse(r#"{"ttl": 300.0, "at": -5.0}"#).unwrap();
        assert_eq!((t.ttl, t.at), (Some(300), -5));
        let t = parse(r#"{"ttl": 300, "at": 7}"#).unwrap();
        assert_eq!((t.ttl, t.at), (Some(300), 7));
        assert_eq!(parse(r#"{"at": 1}"#).unwrap().ttl, None);
        assert_eq!(parse(r#"{"ttl": null, "at": 1}"#).unwrap().ttl, None);
        for bad in [
            r#"{"ttl": 1.5, "at": 1}"#,
            r#"{"ttl": -1, "at": 1}"#,
            r#"{"ttl": -1.0, "at": 1}"#,
            r#"{"ttl": 1e300, "at": 1}"#,
            r#"{"ttl": "1", "at": 1}"#,
            r#"{"at": 18446744073709551615}"#,
            r#"{"at": true}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
