//! Checking the signatures of a batch being admitted: off the async workers (ed25519
//! costs tens of microseconds a signature), split across the cores, each part checked
//! as one ed25519 batch (`delta::verify_all`). A batch without a signed delta costs
//! nothing here.

use crate::delta::{verify_all, Delta, InvalidDelta, Signed};
use crate::store::StoreError;

/// Fewer signed deltas than this per part do not pay for another thread.
const MIN_PER_PART: usize = 64;

pub(super) type Checked = Vec<Result<Delta, InvalidDelta>>;

/// What checking each delta's signature found, in order (`Unsigned` for invalid ones).
/// Takes the batch and gives it back, so the parts can move to blocking threads.
pub(super) async fn verify_signatures(
    checked: Checked,
) -> Result<(Checked, Vec<Signed>), StoreError> {
    let signed = checked
        .iter()
        .filter(|d| d.as_ref().is_ok_and(Delta::has_signature))
        .count();
    if signed == 0 {
        let n = checked.len();
        return Ok((checked, vec![Signed::Unsigned; n]));
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let parts = cores.min(signed.div_ceil(MIN_PER_PART)).max(1);
    let per_part = checked.len().div_ceil(parts);
    let mut rest = checked;
    let mut tasks = Vec::with_capacity(parts);
    while !rest.is_empty() {
        let tail = rest.split_off(per_part.min(rest.len()));
        let part = std::mem::replace(&mut rest, tail);
        tasks.push(tokio::task::spawn_blocking(move || {
            let found = verify_part(&part);
            (part, found)
        }));
    }
    let mut checked = Vec::new();
    let mut found = Vec::new();
    for task in tasks {
        let (part, part_found) = task
            .await
            .map_err(|e| StoreError::Corrupt(format!("signature check task failed: {e}")))?;
        checked.extend(part);
        found.extend(part_found);
    }
    Ok((checked, found))
}

fn verify_part(part: &[Result<Delta, InvalidDelta>]) -> Vec<Signed> {
    let mut found = verify_all(part.iter().filter_map(|d| d.as_ref().ok())).into_iter();
    part.iter()
        .map(|d| match d {
            Ok(_) => found.next().unwrap_or(Signed::Unsigned),
            Err(_) => Signed::Unsigned,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::{new_delta, Pointer};
    use crate::identity::NodeKey;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_delta_gets_its_own_answer_in_order_across_parts() {
        let key = NodeKey::generate().unwrap();
        let checked: Checked = (0..700)
            .map(|i| {
                if i % 50 == 7 {
                    return Err(InvalidDelta::new("id", "test"));
                }
                let mut d = new_delta("a", "s", vec![Pointer::new("n", i64::from(i).into())]);
                if i % 3 != 0 {
                    d.sign(&key).unwrap();
                }
                if i == 301 {
                    d.author = "forged".into();
                }
                Ok(d)
            })
            .collect();
        let ids: Vec<Option<String>> = checked
            .iter()
            .map(|d| d.as_ref().ok().map(|d| d.id.clone()))
            .collect();
        let (back, found) = verify_signatures(checked).await.unwrap();
        assert_eq!(
            back.iter()
                .map(|d| d.as_ref().ok().map(|d| d.id.clone()))
                .collect::<Vec<_>>(),
            ids
        );
        for (i, s) in found.iter().enumerate() {
            let expected = if i == 301 {
                "bad"
            } else if i % 50 == 7 || i % 3 == 0 {
                "unsigned"
            } else {
                "by"
            };
            let got = match s {
                Signed::Bad(_) => "bad",
                Signed::Unsigned => "unsigned",
                Signed::By(k) if *k == key.verifying_key() => "by",
                Signed::By(_) => "other",
            };
            assert_eq!(got, expected, "delta {i}");
        }
    }
}
