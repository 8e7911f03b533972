"""What the book needs beyond the library: cached experiments, widgets and the fast-mode switch."""
