//! Issue 14, finding 4: large query answers are streamed and paged by bytes, so a read
//! of many large deltas neither builds the whole answer in memory nor hands the client
//! one document of any size; paging on `next` still returns every match once, in order.

use crate::common;

use reqwest::StatusCode;
use serde_json::{json, Value};

/// A delta of about 600 KB (three string targets of 200 KB: under the default limits).
fn big_delta(i: usize) -> Value {
    let text = "x".repeat(200 * 1024);
    json!({"id": format!("big-{i:03}"), "timestamp": 1_700_000_000_000u64 + i as u64,
           "author": "alice", "system": "reads",
           "pointers": [{"role": "a", "target": text}, {"role": "b", "target": text},
                        {"role": "c", "target": text}, {"role": "about", "target": {"id": "topic"}}]})
}

/// Every page of an answer, paging on `next`: each page's ids and its `count` / `next`.
async fn pages(
    fetch: impl Fn(Option<u64>) -> reqwest::RequestBuilder,
) -> Vec<(Vec<String>, Value)> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let res = fetch(after).send().await.expect("request");
        assert_eq!(res.status(), StatusCode::OK);
        let page: Value = res.json().await.expect("a whole JSON document");
        let ids: Vec<String> = page["deltas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            page["count"].as_u64(),
            Some(ids.len() as u64),
            "{}",
            page["count"]
        );
        let next = page["next"].as_u64();
        out.push((ids, json!({"count": page["count"], "next": page["next"]})));
        match next {
            Some(n) => after = Some(n),
            None => return out,
        }
        assert!(out.len() < 100, "paging does not end");
    }
}

#[tokio::test]
async fn a_large_answer_is_paged_by_bytes_and_paging_returns_each_delta_once() {
    let server = common::start_node("reads").await;
    let base = server.url();
    let client = reqwest::Client::new();
    let n = 30;
    for i in 0..n {
        let res = client
            .post(format!("{base}/deltas"))
            .json(&big_delta(i))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    // Small deltas in between, which the filtered query leaves out.
    common::author(server.node(), "bob", 10).await;
    let want: Vec<String> = (0..n).map(|i| format!("big-{i:03}")).collect();

    // A log scan (no index) and an index query (author), by GET and by POST.
    let got_get = pages(|after| {
        let mut q = vec![("limit", "100000".to_owned())];
        q.extend(after.map(|a| ("after", a.to_string())));
        client.get(format!("{base}/deltas")).query(&q)
    })
    .await;
    let got_post = pages(|after| {
        client
            .post(format!("{base}/query"))
            .json(&json!({"filter": {"authors": ["alice"]}, "after": after, "limit": 100000}))
    })
    .await;

    for (name, got) in [("GET /deltas", &got_get), ("POST /query", &got_post)] {
        // About 18 MB of deltas: three pages of at most 8 MiB (and one delta past it).
        assert_eq!(got.len(), 3, "{name}: {got:?}");
        let first_page = got[0].0.len();
        assert!(
            (13..=15).contains(&first_page),
            "{name}: {first_page} on the first page"
        );
        let ids: Vec<String> = got
            .iter()
            .flat_map(|(ids, _)| ids.iter().filter(|id| id.starts_with("big-")).cloned())
            .collect();
        assert_eq!(ids, want, "{name}");
        assert!(got[2].1["next"].is_null(), "{name}: {:?}", got[2].1);
    }
    // The unfiltered scan also returned bob's deltas, once each.
    let all: usize = got_get.iter().map(|(ids, _)| ids.len()).sum();
    assert_eq!(all, n + 10);

    // A stored delta comes back exactly as it was posted.
    let res = client
        .get(format!("{base}/deltas"))
        .query(&[("id", "big-007")])
        .send()
        .await
        .unwrap();
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["deltas"][0], big_delta(7));
    assert_eq!(page["count"], 1);
    server.shutdown().await.unwrap();
}

/// `limit` still ends a page with `next`, and an empty answer is a whole document.
#[tokio::test]
async fn limit_and_empty_answers_keep_their_shape() {
    let server = common::start_node("reads-limit").await;
    let base = server.url();
    common::author(server.node(), "carol", 5).await;
    let page: Value = reqwest::get(format!("{base}/deltas?limit=2&after=1"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (page["count"].as_u64(), page["next"].as_u64()),
        (Some(2), Some(3))
    );
    let page: Value = reqwest::get(format!("{base}/deltas?author=nobody"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page, json!({"deltas": [], "count": 0, "next": null}));
    let page: Value = reqwest::get(format!("{base}/deltas?after=5"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page, json!({"deltas": [], "count": 0, "next": null}));
    server.shutdown().await.unwrap();
}
