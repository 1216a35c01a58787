//! Credits, sends and transfers (process-events).
