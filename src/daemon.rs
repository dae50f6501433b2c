//! The daemon's run loop.
