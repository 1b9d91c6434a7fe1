//! The inference worker pool: threads that each hold one tract session per model, fed by a bounded
//! queue. The HTTP side never waits for room in the queue: a full queue is an immediate 503.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::metrics::Metrics;
use super::{Model, Outcome};
use crate::preprocess::decode_image;
use crate::{ChannelPolicy, RunError};

/// One request's work: an encoded image for one model.
pub struct Job {
    pub model: usize,
    pub body: axum::body::Bytes,
    pub reply: oneshot::Sender<Outcome>,
}

pub struct Pool {
    sender: Option<SyncSender<Job>>,
    threads: Vec<JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

/// Why a job was not queued.
pub enum Refused {
    /// Every worker is busy and the queue is full.
    Full,
    /// The pool is shutting down.
    Closed,
}

impl Pool {
    pub fn start(
        models: Arc<Vec<Model>>,
        workers: usize,
        queue: usize,
        policy: ChannelPolicy,
        top_k: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Pool> {
        let (sender, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let (models, receiver, metrics) = (models.clone(), receiver.clone(), metrics.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("perch-worker-{i}"))
                .spawn(move || work(&models, &receiver, policy, top_k, &metrics));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // Let the threads already started end, then report.
                    drop(sender);
                    threads.into_iter().for_each(|t| drop(t.join()));
                    return Err(e);
                }
            }
        }
        Ok(Pool { sender: Some(sender), threads, metrics })
    }

    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        let Some(sender) = &self.sender else { return Err(Refused::Closed) };
        // Counted before sending: a worker may take the job (and count it down) before try_send returns.
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        sender.try_send(job).map_err(|e| {
            self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            match e {
                TrySendError::Full(_) => Refused::Full,
                TrySendError::Disconnected(_) => Refused::Closed,
            }
        })
    }

    /// Lets the workers finish what is queued, then waits for them.
    pub fn shutdown(mut self) {
        self.sender = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.sender = None;
    }
}

fn work(models: &[Model], receiver: &Mutex<Receiver<Job>>, policy: ChannelPolicy, top_k: usize, metrics: &Metrics) {
    // One tract state per model, made on first use and remade after a failure.
    let mut sessions: Vec<Option<crate::Session<'_>>> = models.iter().map(|_| None).collect();
    loop {
        let job = {
            let queue = receiver.lock().unwrap_or_else(|e| e.into_inner());
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        metrics.queued.fetch_sub(1, Ordering::Relaxed);
        // The client gave up (disconnected or timed out) while the job waited: skip the work.
        if job.reply.is_closed() {
            continue;
        }
        metrics.running.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let model = &models[job.model];
        let slot = &mut sessions[job.model];
        let outcome = match catch_unwind(AssertUnwindSafe(|| classify(model, slot, &job.body, policy, top_k))) {
            Ok(outcome) => outcome,
            Err(_) => {
                // The panic message went to stderr; this worker carries on with a fresh state.
                *slot = None;
                Outcome::Failed("inference panicked: see the server's log".into())
            }
        };
        metrics.inference(&model.name, started.elapsed());
        metrics.running.fetch_sub(1, Ordering::Relaxed);
        let _ = job.reply.send(outcome);
    }
}

fn classify<'m>(
    model: &'m Model,
    slot: &mut Option<crate::Session<'m>>,
    body: &[u8],
    policy: ChannelPolicy,
    top_k: usize,
) -> Outcome {
    let image = match decode_image(body) {
        Ok(image) => image,
        Err(e) => return Outcome::BadImage(e.to_string()),
    };
    let values = match model.classifier.preprocess(&image, policy) {
        Ok(v) => v,
        Err(e) => return Outcome::BadImage(e.to_string()),
    };
    drop(image);
    let session = match slot {
        Some(s) => s,
        None => match model.classifier.session() {
            Ok(s) => slot.insert(s),
            Err(e) => return Outcome::Failed(e.to_string()),
        },
    };
    match session.run(&values) {
        Ok(rows) => Outcome::Classified(model.classifier.top_k(&rows[0], top_k)),
        Err(e @ (RunError::Inference(_) | RunError::Output { .. })) => {
            *slot = None;
            Outcome::Failed(e.to_string())
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}
