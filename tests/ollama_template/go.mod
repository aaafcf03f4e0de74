module ollamatemplate

go 1.18
