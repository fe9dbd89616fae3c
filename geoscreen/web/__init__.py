"""Maps and the review web app. Offline by default: every script and style is served locally."""
