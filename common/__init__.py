"""Process-wide plumbing shared by every part: settings, ids, progress output."""
