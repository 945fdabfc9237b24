"""Maintenance scripts of a source checkout (GPU check, kill/resume, sanitizer cases); importable for their tests."""
