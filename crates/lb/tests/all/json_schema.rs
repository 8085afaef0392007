//! A small JSON Schema validator for the subset docs/openapi.json uses: `type` (one or an
//! array of types), `properties`, `required`, `additionalProperties` (`false` or a schema),
//! `items`, `enum`, `minimum`/`maximum`, `minLength`/`maxLength`, `$ref` (local JSON
//! pointers), `oneOf`, `anyOf` and `allOf`. Annotations (`description`, `examples`,
//! `default`, ...) are ignored; any other keyword is an error, so the document cannot use
//! a rule this validator would silently skip. A mismatch names the JSON path of the first
//! value that breaks the schema.

use std::fmt;

use serde_json::Value;

/// Keywords that only annotate.
const ANNOTATIONS: [&str; 6] = [
    "description",
    "title",
    "examples",
    "example",
    "default",
    "format",
];

/// Keywords that validate.
const RULES: [&str; 14] = [
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "oneOf",
    "anyOf",
    "allOf",
];

/// Where and why a value does not match its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// JSON path of the value: `$`, `$.hosts[0].name`.
    pub path: String,
    /// What was expected.
    pub reason: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.path, self.reason)
    }
}

/// Validates values against schemas of one document (`root`, where `$ref`s point).
pub struct Validator<'a> {
    root: &'a Value,
}

impl<'a> Validator<'a> {
    pub fn new(root: &'a Value) -> Self {
        Self { root }
    }

    /// The value a local `$ref` (`#/components/schemas/X`) points at.
    pub fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        if pointer.is_empty() {
            return Some(self.root);
        }
        let mut at = self.root;
        for token in pointer.strip_prefix('/')?.split('/') {
            let token = token.replace("~1", "/").replace("~0", "~");
            at = match at {
                Value::Object(map) => map.get(&token)?,
                Value::Array(items) => items.get(token.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(at)
    }

    /// Checks `value` against `schema`; the first mismatch found.
    pub fn validate(&self, schema: &Value, value: &Value) -> Result<(), Mismatch> {
        self.check(schema, value, "$", 0)
    }

    fn check(&self, schema: &Value, value: &Value, path: &str, depth: u32) -> Result<(), Mismatch> {
        let fail = |reason: String| {
            Err(Mismatch {
                path: path.to_owned(),
                reason,
            })
        };
        if depth > 64 {
            return fail("schema nesting deeper than 64 ($ref cycle?)".to_owned());
        }
        let schema = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return fail("no value is allowed here".to_owned()),
            Value::Object(map) => map,
            other => return fail(format!("the schema is not an object: {other}")),
        };
        if let Some(unknown) = schema
            .keys()
            .find(|k| !RULES.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()))
        {
            return fail(format!("unsupported schema keyword {unknown:?}"));
        }
        if let Some(reference) = schema.get("$ref") {
            let Some(target) = reference.as_str().and_then(|r| self.resolve(r)) else {
                return fail(format!("unresolvable $ref {reference}"));
            };
            self.check(target, value, path, depth + 1)?;
        }
        if let Some(types) = schema.get("type") {
            let allowed: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                other => return fail(format!("bad \"type\" in the schema: {other}")),
            };
            if !allowed.iter().any(|t| has_type(value, t)) {
                return fail(format!(
                    "expected {}, found {}",
                    allowed.join(" or "),
                    type_name(value)
                ));
            }
        }
        if let Some(Value::Array(options)) = schema.get("enum")
            && !options.contains(value)
        {
            return fail(format!(
                "{value} is not one of {}",
                Value::Array(options.clone())
            ));
        }
        if value.is_number() {
            if let Some(min) = schema.get("minimum")
                && below(value, min)
            {
                return fail(format!("{value} is below the minimum {min}"));
            }
            if let Some(max) = schema.get("maximum")
                && below(max, value)
            {
                return fail(format!("{value} is above the maximum {max}"));
            }
        }
        if let Value::String(text) = value {
            let len = text.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                return fail(format!("{len} characters, at least {min} expected"));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                return fail(format!("{len} characters, at most {max} allowed"));
            }
        }
        if let Value::Object(fields) = value {
            if let Some(Value::Array(required)) = schema.get("required") {
                for name in required.iter().filter_map(Value::as_str) {
                    if !fields.contains_key(name) {
                        return fail(format!("required field {name:?} is missing"));
                    }
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (name, field) in fields {
                let field_path = format!("{path}.{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(field_schema) => {
                        self.check(field_schema, field, &field_path, depth + 1)?
                    }
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            return fail(format!("unexpected field {name:?}"));
                        }
                        Some(extra) => self.check(extra, field, &field_path, depth + 1)?,
                        None => {}
                    },
                }
            }
        }
        if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &format!("{path}[{i}]"), depth + 1)?;
            }
        }
        if let Some(Value::Array(all)) = schema.get("allOf") {
            for branch in all {
                self.check(branch, value, path, depth + 1)?;
            }
        }
        if let Some(Value::Array(any)) = schema.get("anyOf") {
            let misses: Vec<Mismatch> = any
                .iter()
                .filter_map(|b| self.check(b, value, path, depth + 1).err())
                .collect();
            if misses.len() == any.len() {
                return fail(format!("matches no branch of anyOf: {}", list(&misses)));
            }
        }
        if let Some(Value::Array(one)) = schema.get("oneOf") {
            let misses: Vec<Mismatch> = one
                .iter()
                .filter_map(|b| self.check(b, value, path, depth + 1).err())
                .collect();
            match one.len() - misses.len() {
                1 => {}
                0 => return fail(format!("matches no branch of oneOf: {}", list(&misses))),
                n => return fail(format!("matches {n} branches of oneOf, exactly 1 expected")),
            }
        }
        Ok(())
    }

    /// Every keyword of `schema` and of the schemas inside it (not following `$ref`s) is
    /// one this validator knows; the first that is not, with its place in the schema.
    pub fn check_keywords(schema: &Value, at: &str) -> Result<(), String> {
        let Value::Object(map) = schema else {
            return match schema {
                Value::Bool(_) => Ok(()),
                other => Err(format!("{at}: a schema must be an object, found {other}")),
            };
        };
        for (key, sub) in map {
            let here = format!("{at}/{key}");
            if ANNOTATIONS.contains(&key.as_str()) {
                continue;
            }
            if !RULES.contains(&key.as_str()) {
                return Err(format!("{here}: unsupported schema keyword"));
            }
            match key.as_str() {
                "properties" => {
                    for (name, s) in sub.as_object().into_iter().flatten() {
                        Self::check_keywords(s, &format!("{here}/{name}"))?;
                    }
                }
                "items" | "additionalProperties" => Self::check_keywords(sub, &here)?,
                "oneOf" | "anyOf" | "allOf" => {
                    for (i, s) in sub.as_array().into_iter().flatten().enumerate() {
                        Self::check_keywords(s, &format!("{here}/{i}"))?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
    }
}

/// `a < b` for two JSON numbers, exactly for integers.
fn below(a: &Value, b: &Value) -> bool {
    let int = |v: &Value| {
        v.as_i64()
            .map(i128::from)
            .or_else(|| v.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x < y,
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x < y,
            _ => false,
        },
    }
}

fn list(misses: &[Mismatch]) -> String {
    misses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn root() -> Value {
        json!({"components": {"schemas": {
            "Host": {
                "type": "object",
                "required": ["id", "name", "health"],
                "properties": {
                    "id": {"type": "integer", "minimum": 0, "maximum": 4294967295u64},
                    "name": {"type": ["string", "null"]},
                    "health": {"type": "string", "enum": ["healthy", "failing", "unknown"]},
                    "rows": {"type": "array", "items": {"$ref": "#/components/schemas/Row"}}
                },
                "additionalProperties": false
            },
            "Row": {"type": "object", "required": ["load"], "properties": {
                "load": {"type": "integer", "minimum": 0, "maximum": 100}}},
            "Session": {"oneOf": [
                {"type": "object", "required": ["type", "ip"], "additionalProperties": false,
                 "properties": {"type": {"enum": ["client-ip"]}, "ip": {"type": "string"}}},
                {"type": "object", "required": ["type", "name"], "additionalProperties": false,
                 "properties": {"type": {"enum": ["user"]}, "name": {"type": "string", "minLength": 1}}}
            ]},
            "MaybeSession": {"anyOf": [{"$ref": "#/components/schemas/Session"}, {"type": "null"}]},
            "Counts": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
        }}})
    }

    fn check(schema: &str, value: Value) -> Result<(), Mismatch> {
        let root = root();
        let validator = Validator::new(&root);
        validator.validate(
            &json!({"$ref": format!("#/components/schemas/{schema}")}),
            &value,
        )
    }

    fn mismatch(schema: &str, value: Value) -> Mismatch {
        check(schema, value.clone())
            .err()
            .unwrap_or_else(|| panic!("{value} was accepted as {schema}"))
    }

    fn host() -> Value {
        json!({"id": 7, "name": null, "health": "healthy", "rows": [{"load": 40}]})
    }

    #[test]
    fn accepts_a_matching_document() {
        check("Host", host()).expect("a valid host");
        check(
            "Host",
            json!({"id": 7, "name": "web-1", "health": "unknown"}),
        )
        .expect("valid");
        check("MaybeSession", Value::Null).expect("null");
        check("MaybeSession", json!({"type": "user", "name": "joe"})).expect("a user");
        check("Counts", json!({"a": 1, "b": 0})).expect("counts");
    }

    #[test]
    fn rejects_a_missing_required_field() {
        let mut value = host();
        value.as_object_mut().expect("object").remove("health");
        let m = mismatch("Host", value);
        assert_eq!(m.path, "$");
        assert!(m.reason.contains("\"health\" is missing"), "{m}");
    }

    #[test]
    fn rejects_a_wrong_type_with_its_path() {
        let mut value = host();
        value["rows"][0]["load"] = json!("forty");
        let m = mismatch("Host", value);
        assert_eq!(m.path, "$.rows[0].load");
        assert!(m.reason.contains("expected integer, found string"), "{m}");
        let m = mismatch("Host", json!({"id": 7, "name": 3, "health": "healthy"}));
        assert_eq!(m.path, "$.name");
        assert!(m.reason.contains("string or null"), "{m}");
    }

    #[test]
    fn rejects_an_unexpected_enum_value() {
        let mut value = host();
        value["health"] = json!("sleepy");
        let m = mismatch("Host", value);
        assert_eq!(m.path, "$.health");
        assert!(m.reason.contains("\"sleepy\" is not one of"), "{m}");
    }

    #[test]
    fn rejects_an_extra_property_where_additional_properties_is_false() {
        let mut value = host();
        value["colour"] = json!("blue");
        let m = mismatch("Host", value);
        assert_eq!(m.path, "$");
        assert!(m.reason.contains("unexpected field \"colour\""), "{m}");
        // Rows allow extra fields (no additionalProperties there).
        let mut value = host();
        value["rows"][0]["extra"] = json!(true);
        check("Host", value).expect("extra field in a row");
    }

    #[test]
    fn rejects_numbers_out_of_range_and_bad_branches() {
        let mut value = host();
        value["rows"][0]["load"] = json!(101);
        assert_eq!(mismatch("Host", value).path, "$.rows[0].load");
        let m = mismatch("Host", json!({"id": -1, "name": null, "health": "healthy"}));
        assert!(m.reason.contains("below the minimum"), "{m}");
        let m = mismatch(
            "Host",
            json!({"id": 4294967296u64, "name": null, "health": "healthy"}),
        );
        assert!(m.reason.contains("above the maximum"), "{m}");
        let m = mismatch("Counts", json!({"a": 1, "b": -2}));
        assert_eq!(m.path, "$.b");
        let m = mismatch("MaybeSession", json!({"type": "user", "name": ""}));
        assert!(m.reason.contains("no branch of anyOf"), "{m}");
        let m = mismatch("Session", json!({"type": "cookie", "ip": "x"}));
        assert!(m.reason.contains("no branch of oneOf"), "{m}");
    }

    #[test]
    fn refuses_unknown_keywords_and_unresolvable_references() {
        let root = root();
        let validator = Validator::new(&root);
        let m = validator
            .validate(&json!({"type": "string", "pattern": "^a"}), &json!("a"))
            .expect_err("pattern is not supported");
        assert!(
            m.reason.contains("unsupported schema keyword \"pattern\""),
            "{m}"
        );
        let m = validator
            .validate(&json!({"$ref": "#/components/schemas/Nope"}), &json!(1))
            .expect_err("no such schema");
        assert!(m.reason.contains("unresolvable"), "{m}");
        assert!(
            Validator::check_keywords(&json!({"properties": {"a": {"const": 1}}}), "#").is_err()
        );
        Validator::check_keywords(&root["components"]["schemas"]["Host"], "#").expect("known");
    }
}
