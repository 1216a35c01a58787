//! The local Stark Bank sandbox emulator.
