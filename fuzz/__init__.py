"""Coverage-guided fuzzing of every parser that reads untrusted input (``make fuzz``)."""
