#!/bin/bash
cat > Makefile <<'EOF'
CC = cc
CFLAGS = -O2 -Wall
OBJS = src/main.o src/greet.o

greeter: $(OBJS)
	$(CC) $(CFLAGS) -o $@ $(OBJS)

src/%.o: src/%.c src/greet.h
	$(CC) $(CFLAGS) -c -o $@ $<

clean:
	rm -f greeter $(OBJS)
EOF
make
