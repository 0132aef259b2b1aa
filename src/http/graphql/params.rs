//! The GraphQL request parameters from a JSON body or a GET query string, checked against the
//! specification's shapes (every malformed shape is a 400).

use std::borrow::Cow;

use axum::http::{HeaderMap, header};
use serde_json::{Map, Value};

use super::super::operation::Params;

pub fn params_from_json(value: Value) -> Result<Params, String> {
    let Value::Object(mut object) = value else {
        return Err("the request body must be a JSON object".into());
    };
    let query = match object.remove("query") {
        Some(Value::String(q)) => Some(q),
        None | Some(Value::Null) => None,
        Some(_) => return Err("the 'query' parameter must be a string".into()),
    };
    let operation_name = match object.remove("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name),
        Some(_) => return Err("the 'operationName' parameter must be a string".into()),
    };
    let variables = optional_object(object.remove("variables"), "variables")?;
    let extensions = optional_object(object.remove("extensions"), "extensions")?;
    if query.is_none()
        && !extensions
            .as_ref()
            .is_some_and(|e| e.contains_key("persistedQuery"))
    {
        return Err("the 'query' parameter is required".into());
    }
    Ok(Params {
        query,
        operation_name,
        variables,
        extensions,
    })
}

fn optional_object(value: Option<Value>, name: &str) -> Result<Option<Map<String, Value>>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(format!("the '{name}' parameter must be an object")),
    }
}

pub fn params_from_query_string(raw: &str) -> Result<Option<Params>, String> {
    let mut query = None;
    let mut operation_name = None;
    let mut variables = None;
    let mut extensions = None;
    for (key, value) in form_pairs(raw.as_bytes()) {
        let slot = match key.as_ref() {
            "query" => &mut query,
            "operationName" => &mut operation_name,
            "variables" => &mut variables,
            "extensions" => &mut extensions,
            _ => continue,
        };
        if slot.is_some() {
            return Err(format!("the '{key}' parameter is given more than once"));
        }
        *slot = Some(decode(value).into_owned());
    }
    if query.is_none() && extensions.is_none() {
        return Ok(None);
    }
    let parse_object =
        |text: Option<String>, name: &str| -> Result<Option<Map<String, Value>>, String> {
            match text.filter(|t| !t.is_empty()) {
                None => Ok(None),
                Some(text) => {
                    let value: Value = serde_json::from_str(&text)
                        .map_err(|_| format!("the '{name}' parameter must be JSON"))?;
                    optional_object(Some(value), name)
                }
            }
        };
    Ok(Some(Params {
        query,
        operation_name: operation_name.filter(|n| !n.is_empty()),
        variables: parse_object(variables, "variables")?,
        extensions: parse_object(extensions, "extensions")?,
    }))
}

/// `application/x-www-form-urlencoded` pairs as the URL Standard parses them (the same as
/// `url::form_urlencoded::parse`): split on `&`, empty pieces skipped, name and value split at the
/// first `=`. Names are decoded here, values only when asked for ([`decode`]): a parameter the
/// handler does not read is never copied.
fn form_pairs(raw: &[u8]) -> impl Iterator<Item = (Cow<'_, str>, &[u8])> {
    raw.split(|b| *b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = match piece.iter().position(|b| *b == b'=') {
                Some(at) => (&piece[..at], &piece[at + 1..]),
                None => (piece, &piece[piece.len()..]),
            };
            (decode(name), value)
        })
}

/// One percent-encoded name or value: `+` is a space, `%` and two hex digits a byte (any other
/// `%` stays as it is), and bytes that are not UTF-8 become U+FFFD. Borrowed when there is
/// nothing to decode; otherwise one pass into one buffer.
fn decode(encoded: &[u8]) -> Cow<'_, str> {
    let special = |b: &u8| matches!(b, b'%' | b'+');
    let Some(first) = encoded.iter().position(special) else {
        return String::from_utf8_lossy(encoded);
    };
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded;
    let mut next = Some(first);
    // Plain runs are copied whole; only the `%` and `+` between them are looked at.
    while let Some(at) = next {
        bytes.extend_from_slice(&rest[..at]);
        rest = &rest[at..];
        match rest {
            [b'+', tail @ ..] => {
                bytes.push(b' ');
                rest = tail;
            }
            [b'%', high, low, tail @ ..] if hex(*high).is_some() && hex(*low).is_some() => {
                let digit = |b: u8| hex(b).and_then(|d| u8::try_from(d).ok()).unwrap_or(0);
                bytes.push(digit(*high) * 16 + digit(*low));
                rest = tail;
            }
            [other, tail @ ..] => {
                bytes.push(*other);
                rest = tail;
            }
            [] => break,
        }
        next = rest.iter().position(special);
    }
    bytes.extend_from_slice(rest);
    match String::from_utf8(bytes) {
        Ok(text) => Cow::Owned(text),
        Err(error) => Cow::Owned(String::from_utf8_lossy(error.as_bytes()).into_owned()),
    }
}

pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pairs as `url::form_urlencoded::parse` reads them, every value decoded.
    fn decoded(raw: &str) -> Vec<(String, String)> {
        form_pairs(raw.as_bytes())
            .map(|(name, value)| (name.into_owned(), decode(value).into_owned()))
            .collect()
    }

    #[test]
    fn query_strings_decode_as_the_url_standard_says() {
        let pieces = [
            "",
            "&",
            "=",
            "a",
            "a=",
            "=b",
            "a=b",
            "a+b=c+d",
            "%41",
            "%4",
            "%",
            "%%41",
            "%zz",
            "%e2%82%ac",
            "%E2%82%AC",
            "%ff",
            "%c3",
            "€",
            "a=b=c",
            "q%75ery=1",
            "%2B+",
            "x%2",
            "%3D=%26",
            "query=%7B%20me%20%7B%20id%20%7D%20%7D",
        ];
        let mut inputs = Vec::new();
        for a in pieces {
            for b in pieces {
                inputs.push(format!("{a}&{b}"));
                inputs.push(format!("{a}{b}"));
                inputs.push(format!("{a}={b}"));
            }
        }
        for raw in inputs {
            let expected: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes())
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect();
            assert_eq!(decoded(&raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn a_get_request_reads_its_four_parameters() {
        let params = params_from_query_string(
            "query=%7B+me+%7B+id+%7D+%7D&operationName=Me&variables=%7B%22a%22%3A1%7D&other=x",
        )
        .expect("valid")
        .expect("a query");
        assert_eq!(params.query.as_deref(), Some("{ me { id } }"));
        assert_eq!(params.operation_name.as_deref(), Some("Me"));
        assert_eq!(
            params.variables.map(Value::Object),
            Some(serde_json::json!({ "a": 1 }))
        );
        assert!(params_from_query_string("query=a&query=b").is_err());
        assert!(matches!(params_from_query_string("other=1"), Ok(None)));
    }
}
