//! The inbound webhook listener.
