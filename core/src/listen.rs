//! The node's start-up: [`Engine::start`] connects the configured backends
//! and binds every listener, each edge's through its own `listen`
//! (`stomp::listen`, `xmpp::listen`, `admin::listen`).
//!
//! It sits above the edges so that the engine does not: `engine` knows no
//! protocol and no listener, the edges import the engine, and only this
//! module imports both. The binary and the Node addon call
//! `engine.start()` as before.

use crate::engine::{Engine, EngineError, Listener};
use crate::transport::conn::Admission;

impl Engine {
    /// Binds every configured listener and starts accepting. Returns the
    /// bound addresses (port 0 in the config picks a free port).
    pub async fn start(&self) -> Result<Vec<Listener>, EngineError> {
        if !self.listeners.lock().is_empty() {
            return Err(EngineError::AlreadyStarted);
        }
        self.connect_backends().await?;
        #[cfg(feature = "redis")]
        crate::cluster::join(self).await?;
        // Every client listener admits through the node's gate and runs its
        // connections in the node's tasks (the admin listener has a gate of
        // its own).
        let admission = Admission::new(&self.config, self.gate.clone(), self.tasks.clone(), self.shutdown.clone());
        let mut bound = Vec::new();
        crate::stomp::listen::listen(self, &admission, &mut bound).await?;
        crate::xmpp::listen(self, &admission, &mut bound).await?;
        crate::admin::listen(self, &admission, &mut bound).await?;
        self.tasks.spawn(self.clone().memory_monitor());
        *self.listeners.lock() = bound.clone();
        Ok(bound)
    }
}
