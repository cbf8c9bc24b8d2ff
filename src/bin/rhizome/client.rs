//! A small client for a node's HTTP API: what `rhizome put`, `query`, `get`, `negate`,
//! `status`, `link`, `quarantine` and `watch` use, and how they print its answers (one JSON value
//! per line, so their output pipes into `jq` or back into `rhizome put`).
//!
//! Every failure says which it was: no node answering, TLS (a certificate we do not
//! accept, a CA file we cannot use), the node wanting a token (and where this client
//! looked for one), the node refusing the request (with the field it blamed), or an
//! answer that is not JSON. An `https://` node is verified against the system's roots
//! and `--tls-ca`.

use serde_json::Value;

use crate::args::NodeArg;
use rhizome::tls::{self, ClientTls};

/// Why a request to the node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no rhizome node is answering at {url}; start one with `rhizome serve` or pass --node URL"
    )]
    Unreachable { url: String, source: reqwest::Error },
    #[error(
        "the node answered {status}: {code}: {message}{}",
        field.as_deref().map(|f| format!(" (field: {f})")).unwrap_or_default()
    )]
    Api {
        status: u16,
        code: String,
        message: String,
        /// The request field the node blamed, when it named one.
        field: Option<String>,
    },
    #[error(
        "the node requires a token: pass --token, set RHIZOME_TOKEN, or run beside its data dir (--data DIR); {tried}; the node said: {message}"
    )]
    Unauthorized {
        message: String,
        /// Which token was sent, or where none was found.
        tried: String,
    },
    #[error("request to {url} failed: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("the node sent a response that is not JSON: {0}")]
    BadResponse(String),
    #[error("TLS with {url} failed: {reason}")]
    Tls { url: String, reason: String },
}

/// The client of one node, by the base URL of its HTTP API.
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer` on every request.
    token: Option<String>,
    /// Where the token came from, or where none was found: what a 401 tells the user.
    tried: String,
}

impl Client {
    /// A client for the node `node` names (for example `http://127.0.0.1:8080`).
    ///
    /// # Errors
    /// [`ClientError::Tls`] for an `https://` node when the CA file cannot be used or
    /// nothing would be trusted.
    pub fn new(node: &NodeArg) -> Result<Client, ClientError> {
        let base = node.url.trim_end_matches('/').to_owned();
        let tls_failed = |reason: String| ClientError::Tls {
            url: base.clone(),
            reason,
        };
        let http = if base.starts_with("https://") {
            let trust =
                ClientTls::new(node.tls_ca.as_deref()).map_err(|e| tls_failed(e.to_string()))?;
            reqwest::Client::builder()
                .use_preconfigured_tls(rustls::ClientConfig::clone(trust.config()))
                .build()
                .map_err(|e| tls_failed(e.to_string()))?
        } else {
            reqwest::Client::new()
        };
        Ok(Client {
            base,
            http,
            token: None,
            tried: "no token given".to_owned(),
        })
    }

    /// This client, sending the token found (see `token`).
    pub fn with_token(mut self, found: crate::token::Found) -> Client {
        self.token = found.token;
        self.tried = if self.token.is_some() {
            format!("the token sent (from {}) was not accepted", found.tried)
        } else {
            found.tried
        };
        self
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// POSTs JSON to `path` and returns the JSON answer.
    ///
    /// # Errors
    /// [`ClientError`] saying whether the node is down, refused the request or answered badly.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let res = self
            .authorized(self.http.post(&url))
            .json(body)
            .send()
            .await;
        self.answer(url, res).await
    }

    /// POSTs a text body (JSON lines, say) to `path` and returns the JSON answer.
    ///
    /// # Errors
    /// As [`Client::post`].
    pub async fn post_text(
        &self,
        path: &str,
        content_type: &str,
        body: String,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let res = self
            .authorized(self.http.post(&url))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await;
        self.answer(url, res).await
    }

    /// GETs `path` with query parameters and returns the JSON answer.
    ///
    /// # Errors
    /// As [`Client::post`].
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let res = self
            .authorized(self.http.get(&url))
            .query(query)
            .send()
            .await;
        self.answer(url, res).await
    }

    /// GETs `path` with query parameters and returns the body as text, for an answer
    /// whose parts must keep their exact bytes (the deltas of `GET /changes`).
    ///
    /// # Errors
    /// As [`Client::post`].
    pub async fn get_text(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<String, ClientError> {
        let res = self.get_stream(path, query).await?;
        res.text().await.map_err(|source| ClientError::Http {
            url: format!("{}{path}", self.base),
            source,
        })
    }

    /// DELETEs `path` and returns the JSON answer, `Value::Null` when the node sent no body
    /// (204 No Content).
    ///
    /// # Errors
    /// As [`Client::post`].
    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let res = self.authorized(self.http.delete(&url)).send().await;
        self.answer(url, res).await
    }

    /// One page of the node's quarantine (`GET /quarantine`): `{"entries", "total", "next"}`,
    /// up to `limit` entries with a `qid` above `after`.
    ///
    /// # Errors
    /// As [`Client::post`].
    pub async fn quarantine(&self, after: u64, limit: usize) -> Result<Value, ClientError> {
        let query = [("after", after.to_string()), ("limit", limit.to_string())];
        self.get("/quarantine", &query).await
    }

    /// Judges the node's quarantine again under its current policies
    /// (`POST /quarantine/replay`); returns the report (`admitted`, `stillRejected`, ...).
    ///
    /// # Errors
    /// As [`Client::post`].
    pub async fn replay_quarantine(&self) -> Result<Value, ClientError> {
        self.post("/quarantine/replay", &Value::Object(Default::default()))
            .await
    }

    /// GETs `path` and hands back the response as it starts, for an answer that streams
    /// (`rhizome watch`); a refusal is the same error as [`Client::get`]'s.
    ///
    /// # Errors
    /// As [`Client::post`].
    pub async fn get_stream(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let res = self
            .authorized(self.http.get(&url))
            .query(query)
            .send()
            .await;
        let res = self.sent(&url, res)?;
        if res.status().is_success() {
            return Ok(res);
        }
        match self.answer(url, Ok(res)).await {
            Err(e) => Err(e),
            Ok(_) => Err(ClientError::BadResponse(
                "a refusal that reads as a success".into(),
            )),
        }
    }

    /// What became of a request: the response, or why there is none.
    fn sent(
        &self,
        url: &str,
        res: reqwest::Result<reqwest::Response>,
    ) -> Result<reqwest::Response, ClientError> {
        res.map_err(|source| {
            if let Some(tls_error) = tls::rustls_error(&source) {
                ClientError::Tls {
                    url: self.base.clone(),
                    reason: format!("{tls_error} ({})", tls::hint(tls_error)),
                }
            } else if source.is_connect() {
                ClientError::Unreachable {
                    url: self.base.clone(),
                    source,
                }
            } else {
                ClientError::Http {
                    url: url.to_owned(),
                    source,
                }
            }
        })
    }

    async fn answer(
        &self,
        url: String,
        res: reqwest::Result<reqwest::Response>,
    ) -> Result<Value, ClientError> {
        let res = self.sent(&url, res)?;
        let status = res.status();
        let text = res
            .text()
            .await
            .map_err(|source| ClientError::Http { url, source })?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|_| ClientError::BadResponse(text.chars().take(200).collect()))?
        };
        let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        if status.is_success() {
            Ok(body)
        } else if status == reqwest::StatusCode::UNAUTHORIZED {
            Err(ClientError::Unauthorized {
                message: field("message").unwrap_or_default(),
                tried: self.tried.clone(),
            })
        } else {
            Err(ClientError::Api {
                status: status.as_u16(),
                // A delta's own refusal carries its status and the rule that refused it.
                code: field("error")
                    .or_else(|| Some(format!("{} by {}", field("status")?, field("policy")?)))
                    .unwrap_or_else(|| status.as_str().to_owned()),
                message: field("message")
                    .or_else(|| status.canonical_reason().map(str::to_owned))
                    .unwrap_or_default(),
                field: field("field"),
            })
        }
    }
}

/// Prints a JSON value as one line.
pub fn print_line(v: &Value) {
    println!("{v}");
}

/// Prints each item of the array `key` of a `GET path` answer, one JSON line each.
///
/// # Errors
/// When the answer has no such array.
pub fn print_each(answer: &Value, key: &str, path: &str) -> anyhow::Result<()> {
    let items = answer
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow::anyhow!("the node's GET {path} answer has no {key:?} array"))?;
    items.iter().for_each(print_line);
    Ok(())
}

/// Percent-encodes a URL path segment (delta ids are arbitrary strings).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
