//! Signals -> one shutdown future. The first SIGTERM/SIGINT starts the shutdown
//! (stop watching, deregister under a time limit); a second one exits at once.
