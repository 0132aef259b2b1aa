//! The GraphQL request parameters from a JSON body or a GET query string, checked against the
//! specification's shapes (every malformed shape is a 400).

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
    for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
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
        *slot = Some(value.into_owned());
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

pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}
