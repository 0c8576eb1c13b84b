//! Request parameters and their validators (executor-api §2.3–2.5).

use crate::error::{ApiError, ErrorType};
use crate::multipart;
use serde_json::Value;
use std::collections::HashMap;

/// A parameter as it arrived: JSON from a JSON body or the query string;
/// raw bytes from a form (every form value is text, `body` may be binary).
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Json(Value),
    Form(Vec<u8>),
}

#[derive(Debug, Default)]
pub struct Params(HashMap<String, Param>);

impl Params {
    /// Parameters of a POST/DELETE body by content type; anything
    /// unparsable means "no parameters".
    pub fn from_body(content_type: Option<&str>, body: &[u8]) -> Params {
        let ct = content_type.unwrap_or("");
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let mut map = HashMap::new();
        if media == "application/json" {
            if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) {
                map.extend(obj.into_iter().map(|(k, v)| (k, Param::Json(v))));
            }
        } else if media == "multipart/form-data" {
            if let Some(b) = multipart::boundary_of(ct) {
                map.extend(
                    multipart::parse(body, &b)
                        .into_iter()
                        .map(|p| (p.name, Param::Form(p.data))),
                );
            }
        } else {
            map.extend(
                form_urlencoded::parse(body)
                    .map(|(k, v)| (k.into_owned(), Param::Form(v.into_owned().into_bytes()))),
            );
        }
        Params(map)
    }

    pub fn from_query(query: &str) -> Params {
        Params(
            form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), Param::Form(v.into_owned().into_bytes())))
                .collect(),
        )
    }

    pub fn insert(&mut self, name: &str, value: Param) {
        self.0.insert(name.to_string(), value);
    }

    /// The value, or `None` when absent or an explicit JSON null (§2.4).
    fn present(&self, name: &str) -> Option<&Param> {
        match self.0.get(name) {
            None | Some(Param::Json(Value::Null)) => None,
            Some(p) => Some(p),
        }
    }

    fn require(&self, name: &str, required: bool) -> Result<Option<&Param>, ApiError> {
        match self.present(name) {
            None if required => Err(ApiError::untyped(
                400,
                format!("Param \"{name}\" is not optional."),
            )),
            other => Ok(other),
        }
    }

    /// The value as JSON (form values as strings), for structured parameters.
    pub fn json(&self, name: &str) -> Option<Value> {
        match self.present(name)? {
            Param::Json(v) => Some(v.clone()),
            Param::Form(b) => serde_json::from_slice(b).ok(),
        }
    }

    /// Text(max, min): `max == 0` means unlimited.
    pub fn text(
        &self,
        name: &str,
        required: bool,
        max: usize,
        min: usize,
        default: &str,
    ) -> Result<String, ApiError> {
        Ok(match self.require(name, required)? {
            None => default.to_string(),
            Some(p) => {
                let s = match p {
                    Param::Json(Value::String(s)) => s.clone(),
                    Param::Form(b) => String::from_utf8_lossy(b).into_owned(),
                    Param::Json(_) => return Err(invalid(name, &text_description(max, min))),
                };
                let len = s.chars().count();
                if len < min || (max > 0 && len > max) {
                    return Err(invalid(name, &text_description(max, min)));
                }
                s
            }
        })
    }

    /// Like `text`, but keeps a form value's raw bytes (execution `body`).
    pub fn bytes(&self, name: &str, max: usize, min: usize) -> Result<Vec<u8>, ApiError> {
        Ok(match self.present(name) {
            None => Vec::new(),
            Some(Param::Form(b)) => {
                if b.len() < min || b.len() > max {
                    return Err(invalid(name, &text_description(max, min)));
                }
                b.clone()
            }
            Some(Param::Json(Value::String(s))) => {
                let len = s.chars().count();
                if len < min || len > max {
                    return Err(invalid(name, &text_description(max, min)));
                }
                s.clone().into_bytes()
            }
            Some(Param::Json(_)) => return Err(invalid(name, &text_description(max, min))),
        })
    }

    /// Integer, strict (JSON integers only) or loose (numeric strings too).
    pub fn integer(&self, name: &str, loose: bool, default: i64) -> Result<i64, ApiError> {
        const DESC: &str =
            "Value must be a valid signed 32-bit integer between -2147483648 and 2147483647";
        let Some(p) = self.present(name) else {
            return Ok(default);
        };
        let n = match p {
            Param::Json(Value::Number(n)) => n.as_i64(),
            Param::Json(Value::String(s)) if loose => s.trim().parse::<i64>().ok(),
            Param::Form(b) if loose => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok()),
            _ => None,
        };
        n.filter(|n| i32::try_from(*n).is_ok())
            .ok_or_else(|| invalid(name, DESC))
    }

    /// Float, loose.
    pub fn float(&self, name: &str, default: f64) -> Result<f64, ApiError> {
        let Some(p) = self.present(name) else {
            return Ok(default);
        };
        let n = match p {
            Param::Json(Value::Number(n)) => n.as_f64(),
            Param::Json(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Param::Form(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok()),
            _ => None,
        };
        n.filter(|n| n.is_finite())
            .ok_or_else(|| invalid(name, "Value must be a valid float"))
    }

    /// Boolean, strict (JSON booleans) or loose (`"1"`, `0`, `"true"`, …).
    pub fn boolean(&self, name: &str, loose: bool, default: bool) -> Result<bool, ApiError> {
        let Some(p) = self.present(name) else {
            return Ok(default);
        };
        let text = |s: &str| match s {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        };
        let b = match p {
            Param::Json(Value::Bool(b)) => Some(*b),
            Param::Json(Value::Number(n)) if loose => match n.as_i64() {
                Some(1) => Some(true),
                Some(0) => Some(false),
                _ => None,
            },
            Param::Json(Value::String(s)) if loose => text(s),
            Param::Form(b) if loose => std::str::from_utf8(b).ok().and_then(text),
            _ => None,
        };
        b.ok_or_else(|| invalid(name, "Value must be a valid boolean"))
    }

    /// WhiteList; `strict` compares case-sensitively.
    pub fn whitelist(
        &self,
        name: &str,
        allowed: &[String],
        strict: bool,
        default: &str,
    ) -> Result<String, ApiError> {
        let Some(p) = self.present(name) else {
            return Ok(default.to_string());
        };
        let value = match p {
            Param::Json(Value::String(s)) => Some(s.clone()),
            Param::Form(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        let found = value.and_then(|v| {
            allowed
                .iter()
                .find(|a| {
                    if strict {
                        **a == v
                    } else {
                        a.eq_ignore_ascii_case(&v)
                    }
                })
                .cloned()
        });
        found.ok_or_else(|| {
            invalid(
                name,
                &format!("Value must be one of ({})", allowed.join(", ")),
            )
        })
    }

    /// Assoc: a JSON object (an empty list counts as an empty object).
    pub fn assoc(&self, name: &str) -> Result<serde_json::Map<String, Value>, ApiError> {
        let Some(p) = self.present(name) else {
            return Ok(Default::default());
        };
        match p {
            Param::Json(v) => {
                assoc_value(v).ok_or_else(|| invalid(name, "Value must be a valid object."))
            }
            Param::Form(b) => serde_json::from_slice::<Value>(b)
                .ok()
                .as_ref()
                .and_then(assoc_value)
                .ok_or_else(|| invalid(name, "Value must be a valid object.")),
        }
    }

    /// AnyOf(Text(65535), Assoc), decoded as executor-api §8.1 says: a
    /// string is JSON-decoded (invalid JSON → `{}`), then must be an object.
    pub fn text_or_assoc(&self, name: &str) -> Result<serde_json::Map<String, Value>, ApiError> {
        let Some(p) = self.present(name) else {
            return Ok(Default::default());
        };
        let text = match p {
            Param::Json(Value::String(s)) => s.as_bytes().to_vec(),
            Param::Form(b) => b.clone(),
            Param::Json(v) => {
                return assoc_value(v)
                    .ok_or_else(|| invalid(name, "Value must be one of the allowed types"));
            }
        };
        if text.len() > 65535 {
            return Err(invalid(
                name,
                "Value must be a valid string and no longer than 65535 chars",
            ));
        }
        let decoded =
            serde_json::from_slice::<Value>(&text).unwrap_or(Value::Object(Default::default()));
        assoc_value(&decoded).ok_or_else(|| {
            ApiError::with_message(
                ErrorType::ExecutionBadRequest,
                "Value must be a valid object.",
            )
        })
    }
}

fn assoc_value(v: &Value) -> Option<serde_json::Map<String, Value>> {
    let ok_size = |v: &Value| v.to_string().len() <= 65535;
    match v {
        Value::Object(m) if ok_size(v) => Some(m.clone()),
        Value::Array(a) if a.is_empty() => Some(Default::default()),
        _ => None,
    }
}

fn invalid(name: &str, description: &str) -> ApiError {
    ApiError::untyped(400, format!("Invalid `{name}` param: {description}"))
}

fn text_description(max: usize, min: usize) -> String {
    match (min, max) {
        (0, 0) => "Value must be a valid string".to_string(),
        (min, 0) => format!("Value must be a valid string and at least {min} chars"),
        (0, max) => format!("Value must be a valid string and no longer than {max} chars"),
        (min, max) => format!(
            "Value must be a valid string and at least {min} chars and no longer than {max} chars"
        ),
    }
}

/// executor-api §2.5: `""` and `"0"` are both "empty".
pub fn is_empty(s: &str) -> bool {
    s.is_empty() || s == "0"
}

/// executor-api §2.7.
pub fn stringify(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "1".to_string(),
        Value::Bool(false) | Value::Null => String::new(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => format_float(f),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Integral floats without a fraction, others in shortest form.
pub fn format_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_params(v: Value) -> Params {
        Params::from_body(Some("application/json"), v.to_string().as_bytes())
    }

    #[test]
    fn missing_required_and_invalid_messages() {
        let p = json_params(json!({"runtimeId": ""}));
        assert_eq!(
            p.text("image", true, 128, 1, "")
                .expect_err("missing")
                .message,
            "Param \"image\" is not optional."
        );
        let e = p.text("runtimeId", true, 64, 1, "").expect_err("empty");
        assert_eq!(e.code, 400);
        assert!(
            e.message.starts_with("Invalid `runtimeId` param: "),
            "{}",
            e.message
        );
    }

    #[test]
    fn strict_and_loose_numbers_and_booleans() {
        let p = json_params(
            json!({"a": 5, "b": "45", "c": true, "d": "1", "e": 2.5, "f": 3_000_000_000i64}),
        );
        assert_eq!(p.integer("a", false, 0).expect("int"), 5);
        assert!(p.integer("b", false, 0).is_err());
        assert_eq!(p.integer("b", true, 0).expect("loose"), 45);
        assert!(p.integer("f", true, 0).is_err());
        assert!(p.boolean("c", false, false).expect("bool"));
        assert!(p.boolean("d", false, false).is_err());
        assert!(p.boolean("d", true, false).expect("loose"));
        assert_eq!(p.float("e", 1.0).expect("float"), 2.5);
        assert_eq!(p.float("b", 1.0).expect("float"), 45.0);
    }

    #[test]
    fn null_means_default_and_absent_is_not_validated() {
        let p = json_params(json!({"timeout": null}));
        assert_eq!(p.integer("timeout", false, 600).expect("default"), 600);
        assert_eq!(p.integer("memory", false, 512).expect("default"), 512);
    }

    #[test]
    fn assoc_rules() {
        let p = json_params(json!({"a": {}, "b": [], "c": ["x"], "d": "str"}));
        assert!(p.assoc("a").is_ok());
        assert!(p.assoc("b").is_ok());
        assert!(p.assoc("c").is_err());
        assert!(p.assoc("d").is_err());
        let q = json_params(
            json!({"h": "{\"x\":\"y\"}", "bad": "not json", "list": "[1]", "arr": ["a","b"]}),
        );
        assert_eq!(q.text_or_assoc("h").expect("obj")["x"], "y");
        assert!(q.text_or_assoc("bad").expect("empty").is_empty());
        assert_eq!(
            q.text_or_assoc("list").expect_err("list").kind,
            ErrorType::ExecutionBadRequest
        );
        assert!(q.text_or_assoc("arr").is_err());
    }

    #[test]
    fn whitelist_strict_and_loose() {
        let allowed = vec!["GET".to_string(), "POST".to_string()];
        let p = json_params(json!({"m": "get"}));
        assert!(p.whitelist("m", &allowed, true, "GET").is_err());
        assert_eq!(
            p.whitelist("m", &allowed, false, "GET").expect("loose"),
            "GET"
        );
    }

    #[test]
    fn stringify_rules() {
        assert_eq!(stringify(&json!(1.0)), "1");
        assert_eq!(stringify(&json!(2.5)), "2.5");
        assert_eq!(stringify(&json!(1024)), "1024");
        assert_eq!(stringify(&json!(true)), "1");
        assert_eq!(stringify(&json!(false)), "");
    }

    #[test]
    fn forms_and_multipart_are_parameters_too() {
        let p = Params::from_body(
            Some("application/x-www-form-urlencoded"),
            b"timeout=15&logging=0",
        );
        assert_eq!(p.integer("timeout", true, 0).expect("int"), 15);
        assert!(!p.boolean("logging", true, true).expect("bool"));
        let garbage = Params::from_body(Some("application/json"), b"{not json");
        assert_eq!(garbage.integer("timeout", true, 7).expect("default"), 7);
    }
}
