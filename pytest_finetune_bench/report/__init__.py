"""What people read: the terminal table and benchmark.json."""
