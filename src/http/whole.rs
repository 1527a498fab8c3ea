//! Integer fields as JSON spells them. JSON has one number type, and JSON Schema's `integer`
//! admits `3.0` as well as `3`; serde's integers refuse the first. These read either, and
//! refuse a fraction or a value outside the field's type with the usual message.
//!
//! Use with `#[serde(default, deserialize_with = "whole::option")]` (absent or `null` is
//! `None`) or `"whole::present"` (absent `None`, `null` `Some(None)`).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Unexpected, Visitor};

/// The largest magnitude an `f64` holds every integer up to (2^53).
const EXACT_F64: f64 = 9_007_199_254_740_992.0;

/// `v` as an integer when it is a whole number an `f64` holds exactly (`3.0`, not `3.5`, not
/// `1e300`).
pub fn exact(v: f64) -> Option<i64> {
    // Exact: a whole number of at most 2^53 in magnitude.
    (v.fract() == 0.0 && v.abs() <= EXACT_F64).then_some(v as i64)
}

struct Whole<T>(PhantomData<T>);

impl<'de, T> Visitor<'de> for Whole<T>
where
    T: TryFrom<i64> + TryFrom<u64>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an integer that fits {}", std::any::type_name::<T>())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        match exact(v) {
            Some(n) => self.visit_i64(n),
            None => Err(E::invalid_value(Unexpected::Float(v), &self)),
        }
    }
}

/// An optional integer: absent or `null` is `None`.
pub fn option<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    struct Maybe<T>(PhantomData<T>);
    impl<'de, T: TryFrom<i64> + TryFrom<u64>> Visitor<'de> for Maybe<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            Whole::<T>(PhantomData).expecting(f)
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Option<T>, D::Error> {
            de.deserialize_any(Whole(PhantomData)).map(Some)
        }
    }
    de.deserialize_option(Maybe(PhantomData))
}

/// An integer that may be cleared: absent is `None` (the field's default), `null`
/// `Some(None)`.
pub fn present<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    option(de).map(Some)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Body {
        #[serde(default, deserialize_with = "super::option")]
        n: Option<u32>,
        #[serde(default, deserialize_with = "super::present")]
        m: Option<Option<i64>>,
    }

    fn parse(json: &str) -> Result<Body, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_an_integer_however_json_spells_it() {
        assert_eq!(parse(r#"{"n": 3}"#).unwrap().n, Some(3));
        assert_eq!(parse(r#"{"n": 3.0}"#).unwrap().n, Some(3));
        assert_eq!(parse(r#"{"n": 3e2}"#).unwrap().n, Some(300));
        assert_eq!(parse(r#"{"m": -2.0}"#).unwrap().m, Some(Some(-2)));
        assert_eq!(parse(r#"{"n": null}"#).unwrap().n, None);
        assert_eq!(parse(r#"{"m": null}"#).unwrap().m, Some(None));
        assert_eq!(parse("{}").unwrap(), Body { n: None, m: None });
    }

    #[test]
    fn refuses_fractions_strings_and_values_the_type_cannot_hold() {
        for bad in [
            r#"{"n": 3.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": -1.0}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": "3"}"#,
            r#"{"m": 1e17}"#,
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("an integer that fits"), "{bad}: {err}");
        }
    }
}
