"""The code that talks to the queue's Redis: key names, Lua scripts, and their Python wrappers."""
