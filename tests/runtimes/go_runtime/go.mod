module hearth/testruntime

go 1.19
