"""Model aliases: alias files, their validation and resolution, and the chat templates they name."""
