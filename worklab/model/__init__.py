"""The network: every kind of body and their assembly, input preprocessing, batch norm, rules, pretrained restore."""
