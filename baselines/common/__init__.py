"""Small shared leaves: errors, run folders, metrics logging, reports, progress."""
