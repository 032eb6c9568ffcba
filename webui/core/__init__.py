"""What every room shares and imports without importing each other: the user-facing errors, the request record,
the run control, sampler and hires names, picture modes. Imports nothing of ours (see README.md)."""
