module hearth/relay

go 1.19
