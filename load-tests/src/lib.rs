//! Load generator for the Lianxin server.
