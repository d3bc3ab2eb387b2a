//! `Pull`: an image pull in progress, its progress events and then its result.

use std::sync::Arc;

use boxlite_engine::image::registry::PullEvent;
use boxlite_engine::Error;
use pyo3::prelude::*;

use crate::bridge::Completer;
use crate::errors::engine;

type PullResult = Result<String, Error>;

/// A pull in progress: its progress events, then its result (the image record as JSON).
#[pyclass(name = "Pull", module = "boxlite._engine", frozen)]
pub(crate) struct PyPull {
    pub(crate) events: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<PullEvent>>>,
    pub(crate) result: Arc<tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<PullResult>>>>,
}

#[pymethods]
impl PyPull {
    /// The outcome is the next progress event as JSON, or None once the pull has ended.
    fn next_event(&self, completer: &Completer) -> u64 {
        let events = self.events.clone();
        completer.spawn(async move {
            let event = events.lock().await.recv().await;
            engine(Ok(
                event.map(|e| serde_json::to_string(&e).expect("event serialises"))
            ))
        })
    }

    /// The outcome is the pulled image's record as JSON.
    fn result(&self, completer: &Completer) -> u64 {
        let result = self.result.clone();
        completer.spawn(async move {
            let receiver = result.lock().await.take();
            let outcome = match receiver {
                Some(rx) => rx.await.unwrap_or_else(|_| {
                    Err(Error::Image {
                        image: "?".into(),
                        reason: "the pull task ended without a result".into(),
                    })
                }),
                None => Err(Error::InvalidOption(
                    "the result of this pull was already taken".into(),
                )),
            };
            engine(outcome)
        })
    }
}
