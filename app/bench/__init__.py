"""``cnnlstm bench``: open-loop load against the Serve stack and a no-Ray baseline."""
