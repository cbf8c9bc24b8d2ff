//! The `rhizome` subcommands. The binary is a thin clap layer over these.

pub mod init;
pub mod link;
pub mod policy;
pub mod put;
pub mod quarantine;
pub mod query;
pub mod serve;
pub mod status;

/// Where the client subcommands find the node.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArg {
    /// URL of the node's HTTP API.
    #[arg(
        long = "node",
        env = "RHIZOME_NODE",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
}

/// Prints a JSON value as one line.
pub(crate) fn print_line(v: &serde_json::Value) {
    println!("{v}");
}

/// Percent-encodes a URL path segment (delta ids are arbitrary strings).
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
