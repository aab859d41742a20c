"""One router per resource: health, queries (next pair), labels (submit, undo), progress and admin stats, labelers,
export, and the pages (labeling page, admin page, clips)."""
