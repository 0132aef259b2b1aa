//! GraphQL over HTTP as tests see it: one response type with what assertions need.

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{TestApp, header};

/// A GraphQL response over HTTP, read once.
#[derive(Debug, Clone)]
pub struct GqlResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl GqlResponse {
    /// The first error's `extensions.code` (empty when there is none).
    pub fn code(&self) -> &str {
        self.body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// `extensions.<name>` of the first error.
    pub fn extension(&self, name: &str) -> Value {
        self.body["errors"][0]["extensions"][name].clone()
    }

    /// The message for `field` in the first error's `extensions.fields`.
    pub fn field_error(&self, field: &str) -> &str {
        self.body["errors"][0]["extensions"]["fields"][field]
            .as_str()
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> &str {
        header(&self.headers, name)
    }
}

impl TestApp {
    /// POSTs a GraphQL request (with a bearer token when given).
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> GqlResponse {
        let (status, headers, body) = self.graphql_as(token, query, variables).await;
        GqlResponse {
            status,
            headers,
            body,
        }
    }

    /// GETs a query (the way a browser revalidates one), with a bearer token and an
    /// `If-None-Match` when given.
    pub async fn get_query(
        &self,
        query: &str,
        token: Option<&str>,
        if_none_match: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .get(self.url("/graphql"))
            .query(&[("query", query)]);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(tag) = if_none_match {
            request = request.header("if-none-match", tag);
        }
        request.send().await.unwrap()
    }
}
