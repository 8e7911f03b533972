"""What the book needs beyond the library: cached experiments, widgets, results over seeds and the fast-mode switch."""
