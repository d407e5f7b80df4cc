"""One module per chapter study: its configuration per profile and the code that runs it."""
