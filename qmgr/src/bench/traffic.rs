//! The put→get traffic of `qmgr bench local` and `qmgr bench forward`: producers that put
//! numbered, stamped messages as fast as their window lets them or on a schedule, consumers
//! that check every message against the run's [`Ledger`] and take its latency, and the drain
//! that ends a run.
//!
//! Latency runs from the time stamped in a message's [`Header`] to its get, on one monotonic
//! clock of this process ([`clock_us`]). A paced producer stamps each put with the time its
//! [`Schedule`] says the put is due, before it waits for room in its window or calls the
//! manager: a put that stalls then shows in the latency of every message due behind it,
//! instead of quietly delaying their stamps (coordinated omission). An unpaced producer has no
//! schedule to keep: it stamps a put when its window lets it go.
//!
//! A run is over when every acknowledged message has been got, or, once every put has
//! returned, when none has come for [`DRAIN_DEADLINE`]: what is still missing then is lost.
//! Every consumer's samples are merged when it stops, so no sample is dropped.

use qmgr::outln;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use hopmq::{Client, Message};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::verify::{Header, Ledger, Reader, Take, Verdict};

/// Once every put has returned, a run with no new message got for this long is over: the
/// messages still missing count as lost.
pub(super) const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// How long consumers go on once every message is got, to catch a late duplicate.
const DUPLICATE_GRACE: Duration = Duration::from_millis(200);
/// How often a producer held back by [`TrafficSpec::ahead_max`] looks again.
const AHEAD_POLL: Duration = Duration::from_millis(1);
/// How often the run looks at its tasks and its ledger.
const WATCH_TICK: Duration = Duration::from_millis(20);
/// The largest latency the histograms hold, in microseconds; larger ones are recorded as it.
const LATENCY_MAX_US: u64 = 60_000_000;

/// Microseconds since the bench's clock started (its first reading), on a monotonic clock
/// shared by every task of this process: producers stamp with it, consumers read it.
pub(super) fn clock_us() -> u64 {
    clock_us_at(Instant::now())
}

/// `instant` on the bench's clock.
pub(super) fn clock_us_at(instant: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(instant.saturating_duration_since(start).as_micros()).unwrap_or(u64::MAX)
}

/// An empty latency histogram, in microseconds.
pub(super) fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)?)
}

/// When a paced producer's puts are due, and the instant each is stamped with.
///
/// Put `k` is due at `origin + k × every` and is stamped with that instant, whatever delays it
/// afterwards (the window, a slow put, this task's turn on the runtime). One allowance: tokio's
/// timer fires on whole milliseconds, so a put the producer had to sleep for goes out up to a
/// millisecond after it is due however fast the manager is, and the bench's own timer is not
/// the broker's latency: the stamp is no earlier than the producer's last wake-up from sleep.
/// A producer that is behind (after a stall) does not sleep, so what it owes is stamped at its
/// due time.
pub(super) struct Schedule {
    // tokio's instants, so that a test can move time.
    origin: tokio::time::Instant,
    every: Duration,
    next: u32,
    woke: tokio::time::Instant,
}

impl Schedule {
    /// A schedule of one put every `every`, the first due now.
    pub(super) fn new(every: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            origin: now,
            every,
            next: 0,
            woke: now,
        }
    }

    /// Waits until the next put is due; returns the instant to stamp it with.
    pub(super) async fn next(&mut self) -> anyhow::Result<tokio::time::Instant> {
        let due = self
            .every
            .checked_mul(self.next)
            .and_then(|offset| self.origin.checked_add(offset))
            .context("the pacing schedule runs past what an instant can hold")?;
        self.next = self
            .next
            .checked_add(1)
            .context("more puts than a pacing schedule counts")?;
        if tokio::time::Instant::now() < due {
            tokio::time::sleep_until(due).await;
            self.woke = tokio::time::Instant::now();
        }
        Ok(due.max(self.woke))
    }
}

/// How often each of `producers` puts a batch of `batch` messages for `rate` messages per
/// second in all.
pub(super) fn put_interval(rate: u64, producers: usize, batch: usize) -> Duration {
    Duration::from_secs_f64(producers as f64 * batch as f64 / rate as f64)
}

/// What a run sends, and how.
pub(super) struct TrafficSpec {
    /// The address producers put to, and the queue consumers take from.
    pub(super) queue: String,
    /// Messages in all, shared out among the producers.
    pub(super) count: u64,
    /// Body size; at least [`super::verify::HEADER_BYTES`].
    pub(super) size: usize,
    pub(super) batch: usize,
    pub(super) window: usize,
    pub(super) prefetch: u32,
    /// When more than 0, consumers read with this many single `get` calls in flight each
    /// instead of the prefetching consumer.
    pub(super) single_gets: usize,
    pub(super) persistent: bool,
    /// Messages per second in all; `None` for as fast as possible.
    pub(super) rate: Option<u64>,
    /// No put starts later than this after the start; `None`: every one of `count` is put.
    pub(super) put_for: Option<Duration>,
    /// The most messages put and not yet got, all producers together; `None`: as many as the
    /// managers accept. Bounds the drain after the last put where the path is slower than the
    /// puts (`bench wan`).
    pub(super) ahead_max: Option<u64>,
}

impl TrafficSpec {
    /// Each producer's share of the messages, for `producers` producers.
    fn shares(&self, producers: usize) -> Vec<u64> {
        let per_producer = self.count.div_ceil(producers.max(1) as u64);
        (0..producers as u64)
            .map(|p| per_producer.min(self.count.saturating_sub(per_producer * p)))
            .collect()
    }
}

/// How far the puts may run ahead of the gets, shared by every producer of a run.
struct Ahead {
    ledger: Arc<Ledger>,
    /// Messages put so far (counted when their put starts).
    put: Arc<AtomicU64>,
    max: u64,
}

impl Ahead {
    /// Waits until `n` more messages would stay within the limit.
    async fn room(&self, n: u64) {
        // A short poll, not a notification from every get: the consumers stay as they are in
        // every other bench, and a millisecond is small beside the path this limit is for.
        while self.put.load(Ordering::Relaxed) + n > self.ledger.distinct() + self.max {
            tokio::time::sleep(AHEAD_POLL).await;
        }
        self.put.fetch_add(n, Ordering::Relaxed);
    }
}

/// One producer's part of a run.
struct Producer {
    queue: String,
    size: usize,
    batch: usize,
    window: usize,
    persistent: bool,
    interval: Option<Duration>,
    run: u32,
    id: u32,
    count: u64,
    /// No put starts after it.
    deadline: Option<Instant>,
    ahead: Option<Arc<Ahead>>,
}

/// What a producer did: how many of its messages were acknowledged (its sequence numbers
/// `0..acknowledged`), and when its last put returned.
struct Produced {
    id: u32,
    acknowledged: u64,
    finished: Instant,
}

impl Producer {
    /// Messages `first..first + n` of this producer, stamped with `sent_us`.
    fn messages(&self, first: u64, n: u64, sent_us: u64) -> Vec<(String, Message)> {
        (first..first + n)
            .map(|seq| {
                let mut body = vec![0u8; self.size];
                Header {
                    sent_us,
                    run: self.run,
                    producer: self.id,
                    seq,
                }
                .write(&mut body);
                let message = Message::new(body);
                let message = if self.persistent {
                    message
                } else {
                    message.non_persistent()
                };
                (self.queue.clone(), message)
            })
            .collect()
    }

    /// Puts every message of this producer, `window` puts in flight, in sequence order.
    async fn run(self, client: Client) -> anyhow::Result<Produced> {
        let window = Arc::new(tokio::sync::Semaphore::new(self.window));
        let mut in_flight = PutsInFlight::new();
        let mut schedule = self.interval.map(Schedule::new);
        let mut sent = 0u64;
        while sent < self.count && self.deadline.is_none_or(|end| Instant::now() < end) {
            let due = match &mut schedule {
                Some(schedule) => Some(schedule.next().await?.into_std()),
                None => None,
            };
            let permit = Arc::clone(&window).acquire_owned().await?;
            let stamp = due.unwrap_or_else(Instant::now);
            let n = (self.batch as u64).min(self.count - sent);
            if let Some(ahead) = &self.ahead {
                ahead.room(n).await;
            }
            let messages = self.messages(sent, n, clock_us_at(stamp));
            sent += n;
            send_put(&client, messages, permit, &mut in_flight).await?;
            while let Some(done) = in_flight.try_join_next() {
                done?.context("a put failed")?;
            }
        }
        while let Some(done) = in_flight.join_next().await {
            done?.context("a put failed")?;
        }
        Ok(Produced {
            id: self.id,
            acknowledged: sent,
            finished: Instant::now(),
        })
    }
}

/// Puts whose replies are still awaited.
pub(super) type PutsInFlight = JoinSet<Result<(), hopmq::ClientError>>;

/// Sends a put of `messages` and leaves its reply to `in_flight`; `permit`, its place in the
/// producer's window, is given back when the reply comes.
///
/// The put is polled once here, so that its request is handed to the connection before the
/// next call's: the manager gets a producer's messages in sequence order, and a consumer that
/// sees them out of order has found the broker's doing, not the bench's. (Unconstrained: out
/// of tokio's cooperative budget, the poll would return before sending anything.)
pub(super) async fn send_put(
    client: &Client,
    messages: Vec<(String, Message)>,
    permit: tokio::sync::OwnedSemaphorePermit,
    in_flight: &mut PutsInFlight,
) -> anyhow::Result<()> {
    let mut put = Box::pin(tokio::task::unconstrained(put(client.clone(), messages)));
    match poll_once(&mut put).await {
        Some(result) => result.context("a put failed"),
        None => {
            in_flight.spawn(async move {
                let result = put.await;
                drop(permit);
                result
            });
            Ok(())
        }
    }
}

/// One put request of one or more messages.
async fn put(
    client: Client,
    mut messages: Vec<(String, Message)>,
) -> Result<(), hopmq::ClientError> {
    if messages.len() == 1 {
        let (address, message) = messages.remove(0);
        client.put(&address, message).await.map(|_| ())
    } else {
        client.put_batch(messages).await.map(|_| ())
    }
}

/// Polls `future` once; its output if it is already done.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *future).poll(cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    })
    .await
}

/// What a consumer took: the latency of every first copy it got, and how many of those came
/// out of their producer's order.
struct Consumed {
    histogram: Histogram<u64>,
    reordered: u64,
}

/// Takes messages until `done` is set, checking each one against the ledger and recording the
/// latency of every first copy.
async fn consume(
    mut consumer: hopmq::Consumer,
    mut reader: Reader,
    mut done: watch::Receiver<bool>,
) -> anyhow::Result<Consumed> {
    let mut histogram = latency_histogram()?;
    loop {
        let message = tokio::select! {
            biased;
            _ = done.wait_for(|done| *done) => break,
            message = consumer.next() => message.context("a get failed")?,
        };
        let got_us = clock_us();
        if let Take::First(header) = reader.take(&message.body) {
            histogram.saturating_record(got_us.saturating_sub(header.sent_us).max(1));
        }
    }
    Ok(Consumed {
        histogram,
        reordered: reader.reordered(),
    })
}

/// How long one single `get` waits at the manager for a message.
const SINGLE_GET_WAIT: Duration = Duration::from_millis(200);

/// Takes messages from `queue` with single `get` calls, `in_flight` of them outstanding at once
/// on `client`'s one connection (what an application calling `get` from many tasks does).
async fn consume_singly(
    client: Client,
    (queue, in_flight): (String, usize),
    mut reader: Reader,
    mut done: watch::Receiver<bool>,
) -> anyhow::Result<Consumed> {
    let mut histogram = latency_histogram()?;
    let send = |client: &Client, queue: &str| {
        let (client, queue) = (client.clone(), queue.to_owned());
        tokio::spawn(async move { client.get(&queue, SINGLE_GET_WAIT).await })
    };
    let mut gets: std::collections::VecDeque<_> =
        (0..in_flight).map(|_| send(&client, &queue)).collect();
    while let Some(next) = gets.front_mut() {
        let got = tokio::select! {
            biased;
            _ = done.wait_for(|done| *done) => break,
            got = next => got,
        };
        gets.pop_front();
        gets.push_back(send(&client, &queue));
        let Some(message) = got.context("a get task failed")?.context("a get failed")? else {
            continue;
        };
        let got_us = clock_us();
        if let Take::First(header) = reader.take(&message.body) {
            histogram.saturating_record(got_us.saturating_sub(header.sent_us).max(1));
        }
    }
    for get in gets {
        get.abort();
    }
    // Gets sent from tasks of their own reach the manager in no set order, so neither do the
    // messages they take: order is not checked.
    Ok(Consumed {
        histogram,
        reordered: 0,
    })
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drained {
    /// Every acknowledged message was got.
    All,
    /// Every put returned, then nothing came for [`DRAIN_DEADLINE`]: the rest is lost.
    Stalled,
    /// There are no consumers: every put returned, and nothing can be checked.
    Unconsumed,
}

/// A run's figures once its traffic is over.
pub(super) struct Outcome {
    /// The latency of every first copy every consumer got.
    pub(super) histogram: Histogram<u64>,
    /// `None` when there were no consumers.
    pub(super) verdict: Option<Verdict>,
    /// From the start to the last put's return.
    pub(super) put_elapsed: Duration,
    /// From the start to the last message got (to the end of the drain if some never came).
    pub(super) elapsed: Duration,
}

/// A run's producers and consumers, started.
pub(super) struct Traffic {
    ledger: Arc<Ledger>,
    producers: JoinSet<anyhow::Result<Produced>>,
    consumers: JoinSet<anyhow::Result<Consumed>>,
    consumers_started: usize,
    done: watch::Sender<bool>,
    /// Per producer, its messages acknowledged, once it has ended.
    acknowledged: Vec<u64>,
    started: Instant,
    last_put: Option<Instant>,
}

impl Traffic {
    /// Starts a consumer of `spec.queue` on each of `consumers`, then a producer on each of
    /// `producers`.
    pub(super) fn start(
        spec: &TrafficSpec,
        producers: Vec<Client>,
        consumers: Vec<Client>,
    ) -> anyhow::Result<Self> {
        let shares = spec.shares(producers.len());
        let run = super::verify::run_id();
        let ledger = Arc::new(Ledger::new(run, &shares));
        let (done, done_rx) = watch::channel(false);
        let consumers_started = consumers.len();
        let mut consumer_tasks = JoinSet::new();
        for client in consumers {
            if spec.single_gets > 0 {
                let reading = (spec.queue.clone(), spec.single_gets);
                consumer_tasks.spawn(consume_singly(
                    client,
                    reading,
                    ledger.reader(),
                    done_rx.clone(),
                ));
            } else {
                consumer_tasks.spawn(consume(
                    client.consumer(&spec.queue, spec.prefetch),
                    ledger.reader(),
                    done_rx.clone(),
                ));
            }
        }
        let interval = spec
            .rate
            .map(|rate| put_interval(rate, producers.len(), spec.batch));
        let mut producer_tasks = JoinSet::new();
        let started = Instant::now();
        let deadline = spec.put_for.map(|put_for| started + put_for);
        let ahead = spec.ahead_max.map(|max| {
            Arc::new(Ahead {
                ledger: ledger.clone(),
                put: Arc::default(),
                max,
            })
        });
        for (id, (client, count)) in producers.into_iter().zip(&shares).enumerate() {
            let producer = Producer {
                queue: spec.queue.clone(),
                size: spec.size,
                batch: spec.batch,
                window: spec.window,
                persistent: spec.persistent,
                interval,
                run,
                id: u32::try_from(id).context("too many producers")?,
                count: *count,
                deadline,
                ahead: ahead.clone(),
            };
            producer_tasks.spawn(producer.run(client));
        }
        Ok(Self {
            ledger,
            producers: producer_tasks,
            consumers: consumer_tasks,
            consumers_started,
            done,
            acknowledged: vec![0; shares.len()],
            started,
            last_put: None,
        })
    }

    /// Fails if a task that has ended failed; takes in what ended producers acknowledged.
    fn check(&mut self) -> anyhow::Result<()> {
        while let Some(done) = self.producers.try_join_next() {
            self.ended(done?.context("a producer failed")?);
        }
        if let Some(done) = self.consumers.try_join_next() {
            done?.context("a consumer failed")?;
            bail!("a consumer stopped before it was asked to");
        }
        Ok(())
    }

    fn ended(&mut self, produced: Produced) {
        if let Some(slot) = self.acknowledged.get_mut(produced.id as usize) {
            *slot = produced.acknowledged;
        }
        self.last_put = self.last_put.max(Some(produced.finished));
    }

    /// Waits until every acknowledged message is got, or the drain deadline passes once every
    /// put has returned; `health` is asked at every look (a manager that exited fails the
    /// run). A silence of [`DRAIN_DEADLINE`] while puts are still running fails it too.
    pub(super) async fn drain(
        &mut self,
        mut health: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<Drained> {
        let mut last = (self.ledger.distinct(), Instant::now());
        loop {
            tokio::time::sleep(WATCH_TICK).await;
            self.check()?;
            health()?;
            let putting = !self.producers.is_empty();
            if self.consumers_started == 0 {
                if putting {
                    continue;
                }
                return Ok(Drained::Unconsumed);
            }
            let got = self.ledger.distinct();
            if !putting && got >= self.acknowledged.iter().sum::<u64>() {
                return Ok(Drained::All);
            }
            if got != last.0 {
                last = (got, Instant::now());
            } else if last.1.elapsed() > DRAIN_DEADLINE {
                if putting {
                    bail!(
                        "stalled: {got} messages got, none for {} s, puts still running",
                        DRAIN_DEADLINE.as_secs()
                    );
                }
                return Ok(Drained::Stalled);
            }
        }
    }

    /// Stops the consumers (after a grace for late duplicates if every message came), merges
    /// what each took, and judges the run.
    pub(super) async fn finish(mut self, drained: Drained) -> anyhow::Result<Outcome> {
        let all_got = self.ledger.all_got_at();
        let elapsed = all_got.unwrap_or_else(Instant::now) - self.started;
        if drained == Drained::All {
            tokio::time::sleep(DUPLICATE_GRACE).await;
        }
        let _ = self.done.send(true);
        let mut histogram = latency_histogram()?;
        let mut reordered = 0;
        while let Some(ended) = self.consumers.join_next().await {
            let consumed = ended?.context("a consumer failed")?;
            histogram.add(&consumed.histogram)?;
            reordered += consumed.reordered;
        }
        while let Some(done) = self.producers.join_next().await {
            self.ended(done?.context("a producer failed")?);
        }
        let put_elapsed = self.last_put.unwrap_or_else(Instant::now) - self.started;
        let verdict = (self.consumers_started > 0)
            .then(|| self.ledger.verdict(&self.acknowledged, reordered));
        Ok(Outcome {
            histogram,
            verdict,
            put_elapsed,
            elapsed,
        })
    }
}

/// The throughput and latency lines every put→get benchmark prints.
pub(super) fn print_results(
    rate: f64,
    size: usize,
    put_elapsed: Duration,
    elapsed: Duration,
    histogram: &Histogram<u64>,
) -> Result<(), qmgr::cli::output::OutputError> {
    outln!(
        "throughput: {rate:.0} msg/s, {:.1} MB/s (puts done in {:.2} s, all got in {:.2} s)",
        rate * size as f64 / 1e6,
        put_elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    )?;
    if !histogram.is_empty() {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        outln!(
            "latency put->get: p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, max {:.3} ms ({} samples)",
            ms(0.5),
            ms(0.99),
            ms(0.999),
            histogram.max() as f64 / 1000.0,
            histogram.len()
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_messages_not_batches() {
        assert_eq!(put_interval(1000, 1, 1), Duration::from_millis(1));
        assert_eq!(put_interval(64_000, 4, 16), Duration::from_millis(1));
    }

    #[test]
    fn shares_add_up_to_the_count() {
        let spec = TrafficSpec {
            queue: "q".to_owned(),
            count: 10,
            size: 64,
            batch: 1,
            window: 1,
            prefetch: 1,
            single_gets: 0,
            persistent: true,
            rate: None,
            put_for: None,
            ahead_max: None,
        };
        assert_eq!(spec.shares(4), [3, 3, 3, 1]);
        assert_eq!(spec.shares(1), [10]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_put_keeps_its_due_time() {
        let mut schedule = Schedule::new(Duration::from_millis(10));
        let first = schedule.next().await.expect("due");
        let second = schedule.next().await.expect("due");
        assert_eq!(second - first, Duration::from_millis(10));
        // A stall of 35 ms: the puts due meanwhile are stamped when they were due, not when
        // the producer gets to them.
        tokio::time::advance(Duration::from_millis(35)).await;
        let third = schedule.next().await.expect("due");
        let fourth = schedule.next().await.expect("due");
        assert_eq!(third - first, Duration::from_millis(20));
        assert_eq!(fourth - first, Duration::from_millis(30));
    }
}
