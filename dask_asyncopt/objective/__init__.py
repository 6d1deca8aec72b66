"""The objective: losses, penalties, step schedules and update rules."""
