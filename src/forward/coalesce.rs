//! Merging the batches of concurrent pushes for one tenant into one
//! upstream request.
//!
//! ```text
//!  push A ─ batch for acme ─► lane acme idle, no other push being split? ── yes ─► sent at once
//!  push B ─ batch for acme ─►                                           └── no ──► open group [B]
//!  push C ─ batch for acme ─►                                                      open group [B, C]
//!     no push is being split and acme has no request out (or `window` passed, or the group is full)
//!          ─► group sent as ONE request: its bodies joined (or merged) ─► B and C hear its answer
//! ```
//!
//! With one upstream request per tenant per push, the cost of a push grows
//! with the number of organizations in it; here a busy tenant costs about
//! one request per window, however many pushes carry its series. A batch
//! waits only while another push is being split (it may bring more for the
//! same tenant) or the tenant's previous request is out, and never longer
//! than `window`: one push at a time goes out at once, so at low load
//! nothing waits.
//!
//! A push hands all its batches over in one call and then waits on one
//! `Ticket`, which the groups carrying its batches fill in: a push of 200
//! organizations is one waiting future and one wake-up, not 200 of each.
//!
//! Invariants:
//! - a group holds batches of one push kind and one tenant only (lanes are
//!   per kind and tenant);
//! - a push hears [`TenantOutcome::Accepted`] only if the request that carried
//!   its batch was accepted. When a merged request is refused with a
//!   non-retryable 4xx, each batch is sent again on its own, so that one
//!   sender's bad series never makes another sender drop its batch (Mimir
//!   ignores samples it already has, so the second send is harmless);
//! - only bodies whose kind concatenates, in a codec that joins (snappy,
//!   or none), are joined ([`crate::formats::PushKind::concatenates`],
//!   [`crate::codec::joins`]); a kind that does not concatenate is merged
//!   only by its own merge ([`crate::formats::PushKind::merge`]: remote
//!   write 2.0's one symbol table, Loki JSON's one `streams` array, gzip
//!   OTLP's protobuf, whose compressed bodies reach here decoded and are
//!   compressed once per upstream request);
//! - a merged request's written counts (2.0) are shared out among its
//!   batches, none hearing more than it carried (see `share`).
//!
//! Joining bodies needs no recompression ([`crate::codec::join`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hashbrown::HashMap;
use tokio::sync::{Notify, Semaphore};

use super::{Forwarder, Push, Sent};
use crate::answer::{TenantOutcome, Written};
use crate::formats::PushKind;
use crate::pool::{BufferPool, Pooled};
use crate::signals::Counts;
use crate::tenant::TenantId;

pub use crate::config::Coalesce;

/// Shards of the lane map, so pushes for different tenants rarely meet on
/// one lock.
const SHARDS: usize = 16;
/// Idle lanes are forgotten when a shard holds more than this.
const MAX_LANES_PER_SHARD: usize = 1024;

/// Lanes by ([`PushKind::id`], tenant).
type LaneMap = HashMap<(usize, TenantId), Arc<Lane>>;

/// The lanes of all tenants.
pub(super) struct Lanes {
    /// By (push kind, tenant): bodies of different kinds never merge.
    shards: [Mutex<LaneMap>; SHARDS],
    window: Duration,
    max_bytes: usize,
    /// Pushes between admission and handing over their batches.
    splitting: Arc<Splitting>,
}

/// How many pushes are being split (and may bring batches soon).
#[derive(Default)]
pub struct Splitting {
    count: std::sync::atomic::AtomicUsize,
    /// Woken when the count drops to zero.
    settled: Notify,
}

impl Splitting {
    fn busy(&self) -> bool {
        self.count.load(std::sync::atomic::Ordering::Acquire) > 0
    }
}

/// A push being split; see [`super::Forwarder::splitting`].
pub struct SplitGuard(Option<Arc<Splitting>>);

impl SplitGuard {
    pub(super) fn enter(splitting: Option<&Arc<Splitting>>) -> Self {
        if let Some(s) = splitting {
            s.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        Self(splitting.cloned())
    }
}

impl Drop for SplitGuard {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            if s.count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                s.settled.notify_waiters();
            }
        }
    }
}

/// One tenant's traffic to the upstream.
#[derive(Default)]
struct Lane {
    state: Mutex<LaneState>,
    /// Woken whenever a request of this lane ends.
    idle: Notify,
}

#[derive(Default)]
struct LaneState {
    /// Requests of this tenant out now.
    in_flight: usize,
    /// The group batches join while a request is out.
    open: Option<Arc<Group>>,
}

/// Batches waiting to travel together.
#[derive(Default)]
struct Group {
    parts: Mutex<Parts>,
    /// Woken when the group is full and must go now.
    full: Notify,
}

#[derive(Default)]
struct Parts {
    bodies: Vec<Bytes>,
    /// Whose batch each body is: the push's ticket and the batch's place in it.
    owners: Vec<(Arc<Ticket>, usize)>,
    /// What each body carries.
    counts: Vec<Counts>,
    decoded: usize,
}

impl Parts {
    fn add(&mut self, push: &Push<'_>, ticket: &Arc<Ticket>, index: usize) {
        self.bodies.push(push.body.clone());
        self.owners.push((ticket.clone(), index));
        self.counts.push(*push.counts);
        self.decoded += push.decoded_len;
    }
}

/// The answers of one push's batches, filled in by the groups that carry
/// them; the push waits for the last one.
pub(super) struct Ticket {
    answers: Mutex<Vec<Option<Sent>>>,
    left: AtomicUsize,
    done: Notify,
    /// Batches of this push on their way and not answered yet, at most
    /// [`super::MAX_PARALLEL_PUSHES`]: a push split into thousands of
    /// tenants does not start thousands of upstream requests at once.
    out: Semaphore,
}

impl Ticket {
    fn new(batches: usize) -> Self {
        Self {
            answers: Mutex::new(vec![None; batches]),
            left: AtomicUsize::new(batches),
            done: Notify::new(),
            out: Semaphore::new(super::MAX_PARALLEL_PUSHES),
        }
    }

    fn answer(&self, index: usize, answer: Sent) {
        let first = {
            let mut answers = lock(&self.answers);
            let slot = &mut answers[index];
            let first = slot.is_none();
            *slot = Some(answer);
            first
        };
        if !first {
            return;
        }
        self.out.add_permits(1);
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Stores a permit if the push is not waiting yet.
            self.done.notify_one();
        }
    }

    async fn wait(&self) {
        while self.left.load(Ordering::Acquire) > 0 {
            self.done.notified().await;
        }
    }

    /// The answers; a batch not answered in time timed out.
    fn take(&self) -> Vec<Sent> {
        std::mem::take(&mut *lock(&self.answers))
            .into_iter()
            .map(|a| {
                a.unwrap_or(Sent {
                    outcome: TenantOutcome::Timeout,
                    written: None,
                })
            })
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends a request of the lane, however its future ends (a sender that hangs
/// up drops it), so a lane never stays busy forever.
struct Flight(Arc<Lane>);

impl Drop for Flight {
    fn drop(&mut self) {
        lock(&self.0.state).in_flight -= 1;
        self.0.idle.notify_waiters();
    }
}

impl Lanes {
    pub(super) fn new(cfg: &Coalesce) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
            window: cfg.window,
            max_bytes: cfg.max_bytes,
            splitting: Arc::default(),
        }
    }

    pub(super) fn splitting(&self) -> &Arc<Splitting> {
        &self.splitting
    }

    fn lane(&self, kind: &PushKind, tenant: &TenantId) -> Arc<Lane> {
        let shard = tenant.as_bytes().iter().fold(kind.id, |h, &b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        }) % SHARDS;
        let mut map = lock(&self.shards[shard]);
        // The key shares the tenant's bytes (a reference count, no copy).
        let key = (kind.id, tenant.clone());
        if let Some(lane) = map.get(&key) {
            return lane.clone();
        }
        if map.len() >= MAX_LANES_PER_SHARD {
            // A lane nobody holds is idle: forget it.
            map.retain(|_, lane| Arc::strong_count(lane) > 1);
        }
        map.entry(key).or_default().clone()
    }

    /// Sends the batches of one push, each alone or merged with other
    /// pushes' batches for the same tenant, and returns the answer of the
    /// request that carried each (in the order given).
    pub(super) async fn push_all(&self, forwarder: &Forwarder, pushes: &[Push<'_>]) -> Vec<Sent> {
        let ticket = Arc::new(Ticket::new(pushes.len()));
        let all = async {
            for (index, push) in pushes.iter().enumerate() {
                // Given back when the batch is answered.
                match ticket.out.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return,
                }
                let lane = self.lane(push.kind, push.tenant);
                self.enqueue(forwarder, &lane, push, &ticket, index);
            }
            ticket.wait().await;
        };
        // Every group ends within the window plus the upstream timeout (and
        // a merged request refused whole, within another timeout), for each
        // round of MAX_PARALLEL_PUSHES batches; the margin only guards
        // against a lost wake-up. A batch not answered by then (or not
        // started) is answered as timed out: retryable.
        let rounds = pushes.len().div_ceil(super::MAX_PARALLEL_PUSHES).max(1) as u32;
        let wait = (self.window + forwarder.timeout() * 2) * rounds + Duration::from_secs(1);
        let _ = tokio::time::timeout(wait, all).await;
        ticket.take()
    }

    /// Puts a batch on its way: into the lane's open group (opening one if
    /// needed, whose task sends it when the lane is free), or, when the lane
    /// is idle and no push is being split, into a group of its own sent at
    /// once.
    fn enqueue(
        &self,
        forwarder: &Forwarder,
        lane: &Arc<Lane>,
        push: &Push<'_>,
        ticket: &Arc<Ticket>,
        index: usize,
    ) {
        let mut state = lock(&lane.state);
        let now = state.in_flight == 0 && state.open.is_none() && !self.splitting.busy();
        if !now {
            if let Some(group) = &state.open {
                let mut parts = lock(&group.parts);
                if parts.decoded + push.decoded_len <= self.max_bytes {
                    parts.add(push, ticket, index);
                    return;
                }
                // Full: it goes now, and this batch opens the next one.
                drop(parts);
                group.full.notify_one();
                state.open = None;
            }
        }
        let group = Arc::new(Group::default());
        lock(&group.parts).add(push, ticket, index);
        if now {
            // The lane's request is this one; later batches open a group
            // that waits for it.
            state.in_flight += 1;
        } else {
            state.open = Some(group.clone());
        }
        drop(state);
        tokio::spawn(fly(Flying {
            forwarder: forwarder.clone(),
            lane: lane.clone(),
            group,
            kind: push.kind,
            tenant: push.tenant.clone(),
            window: self.window,
            splitting: self.splitting.clone(),
            now,
        }));
    }
}

/// What the task of one group needs.
struct Flying {
    forwarder: Forwarder,
    lane: Arc<Lane>,
    group: Arc<Group>,
    kind: &'static PushKind,
    tenant: TenantId,
    window: Duration,
    splitting: Arc<Splitting>,
    /// Sent at once: the lane was idle and already counts this request.
    now: bool,
}

/// The task of one group: unless it goes at once, waits until no push is
/// being split and the lane is idle, or the window has passed, or the group
/// is full; then sends the group and gives each batch's push its answer.
async fn fly(flying: Flying) {
    let Flying {
        forwarder,
        lane,
        group,
        kind,
        tenant,
        window,
        splitting,
        now,
    } = flying;
    if !now {
        let deadline = tokio::time::sleep(window);
        tokio::pin!(deadline);
        let full = group.full.notified();
        tokio::pin!(full);
        loop {
            let idle = lane.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let settled = splitting.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if lock(&lane.state).in_flight == 0 && !splitting.busy() {
                break;
            }
            tokio::select! {
                () = &mut idle => {}
                () = &mut settled => {}
                () = &mut deadline => break,
                () = &mut full => break,
            }
        }
        // Seal: from here on nothing joins this group.
        let mut state = lock(&lane.state);
        if state.open.as_ref().is_some_and(|g| Arc::ptr_eq(g, &group)) {
            state.open = None;
        }
        state.in_flight += 1;
    }
    let flight = Flight(lane);
    let Parts {
        bodies,
        owners,
        counts,
        ..
    } = std::mem::take(&mut *lock(&group.parts));
    let merged = match bodies.as_slice() {
        [one] => Some(one.clone()),
        many => merge(kind, many, forwarder.pool()),
    };
    let shared = match merged {
        Some(body) => {
            let sent = forwarder
                .deliver(kind, &tenant, body, !kind.sent_decoded(), bodies.len())
                .await;
            share(sent, &counts)
        }
        None => None,
    };
    let answers = match shared {
        Some(answers) => answers,
        // Each batch on its own, so each sender hears about its own data.
        None => {
            futures::future::join_all(
                bodies
                    .iter()
                    .map(|b| forwarder.deliver(kind, &tenant, b.clone(), !kind.sent_decoded(), 1)),
            )
            .await
        }
    };
    drop(flight);
    for ((ticket, index), answer) in owners.into_iter().zip(answers) {
        ticket.answer(index, answer);
    }
}

/// The bodies of one group as one body: joined by their codec, or merged
/// by their kind ([`PushKind::merge`]). `None` if a merge fails (it does
/// not for bodies orgsplit made or checked; the batches then go alone).
///
/// Into a pooled buffer: a fresh one per merged request would be mapped
/// and unmapped, or faulted in, each time (measured: ten times the page
/// faults of the server without it).
fn merge(kind: &PushKind, bodies: &[Bytes], pool: &Arc<BufferPool>) -> Option<Bytes> {
    let mut out = pool.take(bodies.iter().map(Bytes::len).sum::<usize>() + 16);
    let Some(merge) = kind.merge else {
        crate::codec::join(kind.codec, bodies, &mut out);
        return Some(Pooled::new(out, pool.clone()).into_bytes());
    };
    let parts: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
    match merge(&parts, &mut out) {
        Ok(()) => Some(Pooled::new(out, pool.clone()).into_bytes()),
        Err(e) => {
            pool.give(out);
            tracing::warn!(kind = kind.name, error = %e, "merging tenant batches failed; sending each alone");
            None
        }
    }
}

/// What each batch of a request carrying batches with `counts` hears of
/// the answer `sent`; `None` when each must be sent again on its own: a
/// merged request refused with a non-retryable 4xx, so that one sender's
/// bad series never makes another sender drop its batch (Mimir ignores
/// samples it already has, so the second send is harmless).
///
/// Written counts (remote write 2.0) of an accepted merged request are
/// shared out in the order of the batches, each taking at most what it
/// carried: which batch's items the upstream did not write cannot be
/// known, but the totals the senders hear add up to what the upstream
/// said, and a full write reaches every batch whole.
fn share(sent: Sent, counts: &[Counts]) -> Option<Vec<Sent>> {
    let n = counts.len();
    if n == 1 {
        return Some(vec![sent]);
    }
    let refused = matches!(&sent.outcome, TenantOutcome::Status { status, .. } if (400..500).contains(status) && *status != 429);
    if refused {
        return None;
    }
    let Some(said) = sent
        .written
        .filter(|_| sent.outcome == TenantOutcome::Accepted)
    else {
        // Not accepted (each hears the same retryable answer), or accepted
        // with no counts (each wrote all it carried).
        return Some(vec![sent; n]);
    };
    let mut left = said.values();
    Some(
        counts
            .iter()
            .map(|c| {
                let carried = Written::of(c).values();
                let [samples, histograms, exemplars] = std::array::from_fn(|i| {
                    let took = carried[i].min(left[i]);
                    left[i] -= took;
                    took
                });
                Sent {
                    outcome: sent.outcome.clone(),
                    written: Some(Written {
                        samples,
                        histograms,
                        exemplars,
                    }),
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carried(samples: u64, exemplars: u64) -> Counts {
        Counts {
            samples,
            exemplars,
            ..Counts::default()
        }
    }

    fn accepted(written: Option<Written>) -> Sent {
        Sent {
            outcome: TenantOutcome::Accepted,
            written,
        }
    }

    fn heard(answers: &[Sent]) -> Vec<Option<[u64; 3]>> {
        answers
            .iter()
            .map(|s| s.written.map(|w| w.values()))
            .collect()
    }

    #[test]
    fn a_merged_requests_written_counts_are_shared_out_by_what_each_batch_carried() {
        let counts = [carried(3, 1), carried(2, 0), carried(4, 2)];
        let all = Written {
            samples: 9,
            histograms: 0,
            exemplars: 3,
        };
        let full = share(accepted(Some(all)), &counts).unwrap();
        assert_eq!(
            heard(&full),
            [Some([3, 0, 1]), Some([2, 0, 0]), Some([4, 0, 2])]
        );
        // Part written (exemplars off upstream, say): the totals still add
        // up to what the upstream said, no batch hears more than it carried.
        let part = Written {
            samples: 4,
            histograms: 0,
            exemplars: 0,
        };
        let shared = share(accepted(Some(part)), &counts).unwrap();
        assert_eq!(
            heard(&shared),
            [Some([3, 0, 0]), Some([1, 0, 0]), Some([0, 0, 0])]
        );
        // A 1.0 upstream says nothing: each wrote all it carried.
        assert_eq!(heard(&share(accepted(None), &counts).unwrap()), [None; 3]);
    }

    #[test]
    fn a_refused_merged_request_is_sent_again_batch_by_batch_and_a_retryable_one_is_not() {
        let counts = [carried(1, 0), carried(1, 0)];
        let status = |status| Sent {
            outcome: TenantOutcome::Status {
                status,
                retry_after: None,
                message: String::new(),
            },
            written: None,
        };
        assert!(share(status(400), &counts).is_none());
        for retryable in [429, 500, 503] {
            let answers = share(status(retryable), &counts).unwrap();
            assert_eq!(answers.len(), 2);
            assert!(answers
                .iter()
                .all(|a| a.outcome == status(retryable).outcome));
        }
        // One batch: the answer as it is, whatever it is.
        assert_eq!(share(status(400), &counts[..1]).unwrap().len(), 1);
    }
}
