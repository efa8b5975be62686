//! Shared support for Meridian's end-to-end tests and benchmarks: starting
//! real clusters of `meridian` processes on loopback addresses.
